"""The `synthloom` command. Every command is a thin layer over the Python API in `api.py`.

User mistakes print one line and exit 2; an aborted run exits 1; Ctrl-C exits 130 after a clean stop.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ConfigError, OutputWriteError, SynthloomError

if TYPE_CHECKING:  # imported inside the commands that need them, so that `list`, `--help`, `validate` and
    # `show` do not pay for the engine, the report or the hub (`python -X importtime -m synthloom.cli list`)
    from .engine.progress import Heartbeat, LiveProgress
    from .engine.runner import Runner
    from .graph.runnable import Graph

    Display = LiveProgress | Heartbeat

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # click's plain help: rich's panels print <bool> beside every flag
                  help="Synthetic training data from YAML graphs of LLM roles.")
# no emoji codes: ':100:' in 'graph.yaml:100: ...' would print as an emoji and the line number would be lost
console = Console(emoji=False)
errors = Console(stderr=True, emoji=False)

SetOption = typer.Option(None, "--set", metavar="KEY=VALUE", help="override a key: dotted.path=value (repeatable)")
EndpointOption = typer.Option(None, "--endpoint", metavar="URL",
                              help="point every model at this OpenAI-compatible URL")
AllowCodeOption = typer.Option(None, "--allow-code", metavar="MODULE", help="let the graph import this module and "
                               "its submodules (repeatable); see README, Graphs from strangers")
TrustGraphOption = typer.Option(False, "--trust-graph", help="also allow the modules the graph's own "
                                "run.allow_code lists, and its models' keys to go where it says (only for graphs "
                                "you wrote)")
KeyHostOption = typer.Option(None, "--allow-key-host", metavar="HOST", help="let a model's API key go to this "
                             "host (repeatable; also SYNTHLOOM_KEY_HOSTS); see README, Graphs from strangers")
AllowReadOption = typer.Option(None, "--allow-read", metavar="DIR", help="let the graph read files in this folder "
                               "and keep dedup indexes there (repeatable; also SYNTHLOOM_ALLOW_READ); see README, "
                               "Graphs from strangers")


def _fail(message: str, code: int = 2) -> None:
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(graph: str, overrides: list[str] | None, endpoint: str | None, allow_code: list[str] | None = None,
          trust_graph: bool = False, key_hosts: list[str] | None = None, run_folder_code: bool = True,
          allow_read: list[Path] | None = None) -> Graph:
    from .graph.load import load
    try:
        return load(graph, overrides or [], endpoint, allow_code=allow_code, trust_graph=trust_graph,
                    allow_key_hosts=key_hosts, allow_read=list(allow_read or ()), run_folder_code=run_folder_code)
    except ConfigError as error:
        _fail(str(error))
        raise  # unreachable: _fail exits
    except (RecursionError, MemoryError):
        _fail(f"{graph}: too deeply nested or too big to check")
        raise


@app.command()
def run(graph: str = typer.Argument(..., help="graph file, or a ready-made workflow name"),
        output: Path | None = typer.Option(None, "-o", "--output", help="output dir (default runs/<name>)"),
        limit: int | None = typer.Option(None, "-n", "--limit", help="records to run"),
        overrides: list[str] | None = SetOption, endpoint: str | None = EndpointOption,
        allow_code: list[str] | None = AllowCodeOption, trust_graph: bool = TrustGraphOption,
        key_hosts: list[str] | None = KeyHostOption, allow_read: list[Path] | None = AllowReadOption,
        resume: bool = typer.Option(False, "--resume", help="finish an interrupted run in the same dir"),
        overwrite: bool = typer.Option(False, "--overwrite", help="start again in a dir that holds a run"),
        no_retry_failed: bool = typer.Option(False, "--no-retry-failed",
                                             help="with --resume: keep failed records failed (default: retry)"),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the response cache"),
        max_in_flight: int | None = typer.Option(None, help="records open at once"),
        cancel_batches: bool = typer.Option(False, "--cancel-batches", help="when the run stops early, cancel "
                                            "its pending provider batches (default: leave them running, since "
                                            "they are paid for; --resume collects their answers)"),
        shard: str | None = typer.Option(None, help="k/n: run only shard k of n of the seed (by id hash)"),
        trace: bool = typer.Option(False, "--trace", help="write each node step to <output>/traces.jsonl"),
        on_ray: bool = typer.Option(False, "--ray", help="run shards as Ray tasks into the one output dir"),
        address: str | None = typer.Option(None, "--address", help="with --ray: auto, ray://host:10001 or local"),
        shards: int | None = typer.Option(None, "--shards", help="with --ray: shards (default: the cluster's CPUs)"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress bar or heartbeat"),
        progress_every: float | None = typer.Option(
            None, "--progress-every", help="seconds between progress lines when stderr is not a terminal "
            "(default $SYNTHLOOM_PROGRESS_EVERY, else 10)")) -> None:
    """Run a graph and write its records to the output directory."""
    if on_ray:
        if shard:
            _fail("--shard k/n splits a run by hand; with --ray use --shards N")
        consent = dict(allow_code=allow_code, trust_graph=trust_graph, allow_key_hosts=key_hosts,
                       allow_read=allow_read)
        _run_on_ray(graph, output, limit, overrides, endpoint, address, shards, _display(quiet, progress_every),
                    consent,
                    dict(resume=resume, overwrite=overwrite, use_cache=not no_cache, max_in_flight=max_in_flight,
                         retry_failed=not no_retry_failed, trace=trace))
        return
    if address or shards is not None:
        _fail("--address and --shards go with --ray")
    if shard:
        index, _, count = shard.partition("/")
        if not (index.isdigit() and count.isdigit()):
            _fail(f"--shard '{shard}' should look like 0/4 (shard k of n, 0-based)")
        overrides = [*(overrides or []), f"seed.shard=[{index}, {count}]"]
    from .engine.runner import Runner, RunOptions
    from .inspect.card import write_card
    display = _display(quiet, progress_every)
    loaded = _load(graph, overrides, endpoint, allow_code, trust_graph, key_hosts, allow_read=allow_read)
    output_dir = output or Path("runs") / loaded.name
    total = limit if limit is not None else loaded.config.seed.limit
    progress = display(total) if display else None
    options = RunOptions(limit=limit, resume=resume, overwrite=overwrite, use_cache=not no_cache,
                         max_in_flight=max_in_flight, retry_failed=not no_retry_failed,
                         on_progress=progress.update if progress else None, trace=trace, on_finished=write_card,
                         cancel_batches=cancel_batches)
    try:
        runner = Runner(loaded, output_dir, options)
    except SynthloomError as error:
        _fail(str(error))
        return
    manifest = _run_with_signals(runner, progress)
    _end(manifest, output_dir)


def _display(quiet: bool, every: float | None) -> Callable[[int | None], Display] | None:
    """How the run shows its progress (given its total once the graph is loaded); None with --quiet."""
    if quiet:
        return None
    from .engine.progress import heartbeat_interval, progress_display
    try:
        seconds = heartbeat_interval(every)
    except ConfigError as error:
        _fail(str(error))
        raise
    return lambda total: progress_display(total, seconds)


def _run_on_ray(graph: str, output: Path | None, limit: int | None, overrides: list[str] | None,
                endpoint: str | None, address: str | None, shards: int | None,
                display: Callable[[int | None], Display] | None, consent: dict[str, Any],
                options: dict[str, Any]) -> None:
    """`run --ray`: one progress display for every shard; Ctrl-C drains every shard (a second stops at once).
    `consent` (--allow-code, --trust-graph, --allow-key-host, --allow-read) goes to the driver and every shard."""
    from .distributed.driver import run_on_ray
    from .engine.stops import StopRequests
    loaded = _load(graph, overrides, endpoint, consent["allow_code"], consent["trust_graph"],
                   consent["allow_key_hosts"], allow_read=consent["allow_read"])
    output_dir = output or Path("runs") / loaded.name
    total = limit if limit is not None else loaded.config.seed.limit
    progress = display(total) if display else None
    shown = False

    def show(totals: dict[str, Any]) -> None:  # the bar appears once the run has started, not before a refusal
        nonlocal shown
        if progress is not None:
            if not shown:
                progress.__enter__()
                shown = True
            progress.update_totals(totals)

    try:
        with StopRequests() as stops:  # the driver loop sees a request within 0.3 s
            manifest = run_on_ray(graph, output_dir, shards, overrides=overrides, endpoint=endpoint,
                                  address=address, limit=limit, on_progress=show, stops=stops, **consent, **options)
    except SynthloomError as error:
        if progress is not None and shown:
            progress.__exit__(type(error), error, None)  # the error is the last line, not the progress
        _fail(str(error), code=1 if isinstance(error, OutputWriteError) else 2)
        return
    if progress is not None and shown:
        progress.__exit__(None, None, None)
    _end(manifest, output_dir)


def _end(manifest: dict[str, Any], output_dir: Path) -> None:
    """The summary line, then the exit code the run's status calls for (1 failed, 130 interrupted)."""
    _summarise(manifest, output_dir)
    if manifest["status"] in ("aborted", "failed"):
        _fail(manifest["message"], code=1)
    if manifest["status"] == "interrupted":
        errors.print(escape(manifest["message"]), highlight=False, soft_wrap=True)
        _exit_now(130)


def _exit_now(code: int) -> None:
    """Leave without waiting for worker threads (a sync node or a model call still running): the journal,
    outputs and manifest are already closed and synced, so there is nothing left to lose."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


GRACE_S = 5.0
"""How long past its drain period (the first stop request) or at once (the second) a one-process run may
take to end before the process leaves without it (the journal makes that safe)."""


def _run_with_signals(runner: Runner, progress: Display | None) -> dict[str, Any]:
    """One process under the one stop handler (`StopRequests`): each request asks the runner to stop
    (drain, then cancel what is in flight), and starts a watchdog in case the loop never gets to it."""
    from .engine.stops import DRAIN, StopRequests
    loop = asyncio.new_event_loop()

    def on_request(count: int) -> None:
        loop.call_soon_threadsafe(runner.request_stop)
        deadline = GRACE_S + (runner.graph.config.run.drain_seconds if count == DRAIN else 0)
        watchdog = threading.Timer(deadline, _exit_now, args=(130,))
        watchdog.daemon = True
        watchdog.start()

    try:
        with StopRequests(on_request):
            if progress is None:
                return loop.run_until_complete(runner.run())
            with progress:
                manifest = loop.run_until_complete(runner.run())
                progress.update(runner, force=True)
                return manifest
    except SynthloomError as error:
        _fail(str(error), code=1 if isinstance(error, OutputWriteError) else 2)
        raise
    finally:
        _close_loop(loop)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Like the end of asyncio.run, less its wait for worker threads (see `_exit_now`)."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _summarise(manifest: dict[str, Any], output_dir: Path) -> None:
    """The final line: what was written where, and why records were dropped or failed (the top reasons)."""
    from .engine.progress import top_reasons
    counts = manifest["counts"]
    outputs = ", ".join(f"{name}: {count}" for name, count in counts["outputs"].items())
    failed, dropped = f"{counts['failed']} failed", f"{counts['dropped']} dropped"
    if counts.get("failure_types"):
        failed += f" ({top_reasons(counts['failure_types'])})"
    if counts.get("drop_reasons"):
        dropped += f" ({top_reasons(counts['drop_reasons'])})"
    console.print(f"[bold]{escape(manifest['graph'])}[/bold] {manifest['status']} in {manifest['elapsed_s']:.1f}s: "
                  f"{counts['written']} records written ({escape(outputs)}), {escape(failed)}, {escape(dropped)} "
                  f"-> {escape(str(output_dir))}", highlight=False, soft_wrap=True)


@app.command()
def validate(graph: str, overrides: list[str] | None = SetOption, endpoint: str | None = EndpointOption,
             allow_code: list[str] | None = AllowCodeOption, trust_graph: bool = TrustGraphOption,
             key_hosts: list[str] | None = KeyHostOption, allow_read: list[Path] | None = AllowReadOption) -> None:
    """Check a graph without calling any model; list the Python it would run (graph-folder code is read,
    not run) and which API key would go to which host."""
    loaded = _load(graph, overrides, endpoint, allow_code, trust_graph, key_hosts, run_folder_code=False,
                   allow_read=allow_read)
    console.print(f"ok: {loaded.name} ({len(loaded.nodes)} nodes, {len(loaded.config.edges)} edges, "
                  f"outputs: {', '.join(o.name for o in loaded.config.outputs)})", highlight=False, markup=False)
    _print_batch_rounds(loaded)
    uses = loaded.code.uses
    console.print(f"python it runs: {'none besides built-in node types' if not uses else len(uses)}",
                  highlight=False, markup=False)
    for use in uses:
        console.print(f"  {use.where}: {use.target} <- {use.reason}", highlight=False, markup=False,
                      soft_wrap=True)
    keys = loaded.code.keys
    console.print(f"API keys it sends: {'none' if not keys else len(keys)}", highlight=False, markup=False)
    for key in keys:
        console.print(f"  models.{key.model}: ${key.env} -> {key.host} <- {key.reason}", highlight=False,
                      markup=False, soft_wrap=True)
    from .graph.runnable import ListedNode
    listed = [name for name, node in loaded.nodes.items() if isinstance(node, ListedNode)]
    unknown = [name for name in loaded.unchecked if name not in listed]
    if listed:
        console.print(f"not checked: the keys of {', '.join(listed)}, keys read after them and the outputs' keys, "
                      f"since validate reads the graph folder's Python without running it (run checks them as it "
                      f"starts)", highlight=False, markup=False, soft_wrap=True)
    if unknown:
        console.print(f"not checked: keys read after {', '.join(unknown)} and the outputs' keys, since "
                      f"what those nodes write is unknown (give @node(writes=[...]) or a TypedDict return)",
                      highlight=False, markup=False, soft_wrap=True)


def _print_batch_rounds(graph: Graph) -> None:
    """How many batch rounds a record needs (each a provider's turnaround, up to 24 h), or would need."""
    from .graph.batch_rounds import batch_rounds
    rounds, every = batch_rounds(graph), batch_rounds(graph, lambda _: True)
    if rounds is not None:
        console.print(f"batch rounds: at most {rounds} per record (batch-model nodes on the longest path, "
                      f"loops at their max_visits); each waits for a whole batch", highlight=False, markup=False)
    elif every is not None:
        console.print(f"batch rounds: none (no batch model; with every model batched: {every})",
                      highlight=False, markup=False)


@app.command()
def show(graph: str, overrides: list[str] | None = SetOption, allow_code: list[str] | None = AllowCodeOption,
         trust_graph: bool = TrustGraphOption, key_hosts: list[str] | None = KeyHostOption,
         allow_read: list[Path] | None = AllowReadOption,
         kind: str = typer.Option("mermaid", "--format", "-f", help="mermaid (text), html (a page) or svg"),
         output: Path | None = typer.Option(None, "-o", "--output", help="write to this file, not stdout")) -> None:
    """Show the graph: Mermaid text, a self-contained HTML page with its diagram, or the diagram as SVG."""
    from .graph.runnable import Graph
    from .inspect.diagram import render_page, render_svg
    renderers = {"mermaid": Graph.mermaid, "html": render_page, "svg": render_svg}
    if kind not in renderers:
        _fail(f"--format '{kind}' is not one of {', '.join(renderers)}")
    text = renderers[kind](_load(graph, overrides, None, allow_code, trust_graph, key_hosts, run_folder_code=False,
                                 allow_read=allow_read))
    if output is None:
        print(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        _fail(f"cannot write {output}: {error.strerror or error}")
    console.print(f"{kind} -> {output}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def preview(graph: str = typer.Argument(..., help="graph file, or a ready-made workflow name"),
            limit: int = typer.Option(3, "-n", "--limit", help="records to run"),
            node: str | None = typer.Option(None, "--node", help="show only this node's steps"),
            as_json: bool = typer.Option(False, "--json", help="the records as JSON, for tools"),
            overrides: list[str] | None = SetOption, endpoint: str | None = EndpointOption,
            no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the response cache"),
            allow_code: list[str] | None = AllowCodeOption, trust_graph: bool = TrustGraphOption,
            key_hosts: list[str] | None = KeyHostOption, allow_read: list[Path] | None = AllowReadOption) -> None:
    """Run a few records without writing a run directory; show each node's prompt, reply, edges, outputs."""
    from .config.loader import pinpoint
    from .inspect.preview import preview as run_preview
    from .inspect.preview_view import render_plain, render_rich
    loaded = _load(graph, overrides, endpoint, allow_code, trust_graph, key_hosts, allow_read=allow_read)
    try:
        records = run_preview(loaded, limit, node, use_cache=not no_cache)
    except SynthloomError as error:
        _fail(str(pinpoint(error, loaded.loaded.source_map) if isinstance(error, ConfigError) else error))
        return
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False, default=str))
    elif console.is_terminal:
        render_rich(records, console, show_outputs=node is None)
    else:
        print(render_plain(records, show_outputs=node is None))


@app.command()
def nodes(name: str | None = typer.Argument(None, help="one node type, in full")) -> None:
    """List every node type, built-in and plugin, with its parameters."""
    from .graph.registry import node_type_names, resolve_node_type
    names = [name] if name else node_type_names()
    table = Table("type", "what it does", "parameters", show_lines=True)
    for type_name in names:
        try:
            node_type = resolve_node_type(type_name)
        except ConfigError as error:
            _fail(str(error))
            return
        params = []
        for field_name, field in node_type.Params.model_fields.items():
            default = ("required" if field.is_required()
                       else f"= {field.get_default(call_default_factory=True)!r}")
            text = f"{field_name} {default}"
            if field.description:
                text += f": {field.description}"
            params.append(text)
        summary = (node_type.description or "").strip().split("\n")[0]
        table.add_row(type_name, escape(summary), escape("\n".join(params)))
    console.print(table)


@app.command("list")
def list_workflows() -> None:
    """List the ready-made workflows in graphs/."""
    import yaml
    folder = resources.files("synthloom_graphs")
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".yaml"):
            spec = yaml.safe_load(entry.read_text(encoding="utf-8"))
            console.print(f"[bold]{entry.name[:-5]}[/bold]: {escape(spec.get('description', ''))}",
                          highlight=False)


@app.command()
def manifest(output_dir: Path) -> None:
    """Print a finished run's manifest."""
    try:
        from .api import read_manifest
        print(json.dumps(read_manifest(output_dir), indent=2))
    except OSError:
        _fail(f"{output_dir} has no manifest.json; is it a run's output directory?")


@app.command("serve")
def serve_command(port: int = typer.Option(8765, help="port (0 picks a free one)"),
                  host: str = typer.Option("127.0.0.1", help="address; loopback by default"),
                  model_path: Path | None = typer.Option(None, "--model-path", help="another GGUF file"),
                  deadline: float = typer.Option(60.0, "--deadline", min=0.1,
                                                 help="seconds a request may take before it is cut (504)")) -> None:
    """Serve the embedded model as an OpenAI-compatible API (chat and completions) to programs on this
    machine: requests from web pages (another Host or Origin, a body not sent as JSON) are refused."""
    from .config.schema import ModelConfig
    from .models.llama.server import serve

    async def forever() -> None:
        config = ModelConfig(backend="local", path=str(model_path) if model_path else None)
        runner, url = await serve(host, port, config, deadline_s=deadline)
        print(url, flush=True)
        errors.print(f"serving the embedded model at {url} (Ctrl-C stops)")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(forever())
    except KeyboardInterrupt:
        pass
    except OSError as error:
        _fail(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port")


@app.command()
def report(output_dir: Path = typer.Argument(..., help="a run's output directory"),
           compare: Path | None = typer.Option(None, "--compare", help="another run's dir, side by side"),
           graph: str | None = typer.Option(None, "--graph", help="the run's graph file, to draw it"),
           output: Path | None = typer.Option(None, "-o", "--output", help="write the page here (default "
                                              "<output dir>/report.html, or report-vs-<other dir>.html)"),
           allow_read: list[Path] | None = AllowReadOption) -> None:
    """Write <output dir>/report.html: counts, drops, histograms, diversity, cost, examples, traces."""
    from .inspect.report import build_report
    try:
        path = build_report(output_dir, compare, graph, to=output, allow_read=allow_read or ())
    except SynthloomError as error:
        _fail(str(error))
        return
    console.print(f"report -> {path}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def card(output_dir: Path = typer.Argument(..., help="a run's output directory"),
         graph: Path | None = typer.Option(None, "--graph", help="the run's graph file, to draw and quote it "
                                           "(else the manifest's, only when it lies inside the run directory)"),
         allow_read: list[Path] | None = AllowReadOption) -> None:
    """Write <output dir>/README.md, the Hugging Face dataset card (every run also writes it at its end)."""
    from .inspect.card import build_card
    try:
        path = build_card(output_dir, allow_read or (), graph)
    except (SynthloomError, OSError) as error:
        _fail(str(error))
        return
    console.print(f"dataset card -> {path}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def push(output_dir: Path = typer.Argument(..., help="a run's output directory"),
         repo_id: str = typer.Argument(..., help="the dataset repository, user/name"),
         private: bool = typer.Option(False, "--private", help="create the repository private"),
         all_files: bool = typer.Option(False, "--all", help="also upload failed.jsonl and dropped.jsonl"),
         dry_run: bool = typer.Option(False, "--dry-run", help="list the files and print the card; upload "
                                      "nothing (no network)"),
         reviewed: bool = typer.Option(False, "--reviewed", help="only the records accepted in `synthloom "
                                       "studio`, with their edits (reviews.jsonl)")) -> None:
    """Upload a run to the Hugging Face Hub as a dataset: outputs, README.md, manifest.json (extra `hub`).
    The Hub is $HF_ENDPOINT when set (a mirror or a private Hub), else huggingface.co."""
    from .inspect.hub import hub_url, plan_push
    from .inspect.hub import push as push_run
    if dry_run:
        try:
            files, card_text = plan_push(output_dir, all_files, reviewed)
        except (SynthloomError, OSError) as error:
            _fail(str(error))
            return
        print(f"would upload to {hub_url(repo_id)}{' (a private repository)' if private else ''} from "
              f"{output_dir}:")
        for name in files:
            size = "" if reviewed else f"  ({(output_dir / name).stat().st_size:,} bytes)"
            print(f"  {name}{size}")
        print(f"\n--- README.md (the dataset card) ---\n{card_text}", end="")
        return
    try:
        info = push_run(output_dir, repo_id, private=private, all_files=all_files, reviewed=reviewed)
    except SynthloomError as error:
        _fail(str(error))
        return
    except Exception as error:  # the Hub's own errors (no token, no permission, no network) in one line
        _fail(f"push to {repo_id} failed: {type(error).__name__}: {error}".splitlines()[0], code=1)
        return
    console.print(f"pushed {output_dir} -> {getattr(info, 'commit_url', None) or repo_id}", markup=False,
                  highlight=False, soft_wrap=True)


@app.command()
def studio(dirs: list[Path] = typer.Argument(None, help="run directories, or folders holding them (default: runs/)"),
           host: str = typer.Option("127.0.0.1", "--host", help="the address to listen on (another interface "
                                    "than loopback needs the printed token in the URL)"),
           port: int = typer.Option(8766, "--port", help="the port to listen on")) -> None:
    """Runs, records and traces in a browser; review records (accept, reject, edit) into reviews.jsonl."""
    from .studio.serve import serve_studio
    roots = dirs or [Path("runs")]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        _fail(f"no folder {', '.join(missing)}; give run directories or folders holding them")
        return
    try:
        serve_studio(roots, host, port, announce=lambda line: print(line, flush=True))
    except OSError as error:
        _fail(f"cannot listen on {host}:{port}: {error.strerror or error}; choose another --port", code=1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

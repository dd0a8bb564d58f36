"""The `synthloom` command. Every command is a thin layer over the Python API in `api.py`.

User mistakes print one line and exit 2; an aborted run exits 1; Ctrl-C exits 130 after a clean stop.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import api
from .errors import ConfigError, SynthloomError
from .graph import Graph
from .progress import LiveProgress
from .registry import node_type_names, resolve_node_type
from .scheduler import Runner, RunOptions

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Synthetic training data from YAML graphs of LLM roles.")
console = Console()
errors = Console(stderr=True)

SetOption = typer.Option(None, "--set", help="override a key: dotted.path=value (repeatable)")
EndpointOption = typer.Option(None, "--endpoint", help="point every model at this OpenAI-compatible URL")
AllowCodeOption = typer.Option(None, "--allow-code", help="let the graph import this module and its submodules "
                               "(repeatable); see README, Graphs from strangers")
TrustGraphOption = typer.Option(False, "--trust-graph", help="also allow the modules the graph's own "
                                "run.allow_code lists (only for graphs you wrote)")


def _fail(message: str, code: int = 2) -> None:
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(graph: str, overrides: list[str] | None, endpoint: str | None, allow_code: list[str] | None = None,
          trust_graph: bool = False) -> Graph:
    try:
        return api.load(graph, overrides or [], endpoint, allow_code=allow_code, trust_graph=trust_graph)
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
        resume: bool = typer.Option(False, "--resume", help="finish an interrupted run in the same dir"),
        overwrite: bool = typer.Option(False, "--overwrite", help="start again in a dir that holds a run"),
        no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the response cache"),
        max_in_flight: int | None = typer.Option(None, help="records open at once"),
        shard: str | None = typer.Option(None, help="k/n: run only shard k of n of the seed (by id hash)"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="no progress bar")) -> None:
    """Run a graph and write its records to the output directory."""
    if shard:
        index, _, count = shard.partition("/")
        if not (index.isdigit() and count.isdigit()):
            _fail(f"--shard '{shard}' should look like 0/4 (shard k of n, 0-based)")
        overrides = [*(overrides or []), f"seed.shard=[{index}, {count}]"]
    loaded = _load(graph, overrides, endpoint, allow_code, trust_graph)
    output_dir = output or Path("runs") / loaded.name
    total = limit if limit is not None else loaded.config.seed.limit
    progress = LiveProgress(total) if not quiet else None
    options = RunOptions(limit=limit, resume=resume, overwrite=overwrite, use_cache=not no_cache,
                         max_in_flight=max_in_flight, on_progress=progress.update if progress else None)
    try:
        runner = Runner(loaded, output_dir, options)
    except SynthloomError as error:
        _fail(str(error))
        return
    manifest = _run_with_signals(runner, progress)
    _summarise(manifest, output_dir)
    if manifest["status"] == "aborted":
        _fail(manifest["message"], code=1)
    if manifest["status"] == "interrupted":
        errors.print(escape(manifest["message"]), highlight=False)
        raise typer.Exit(130)


def _run_with_signals(runner: Runner, progress: LiveProgress | None) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, runner.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        return await runner.run()

    try:
        if progress is None:
            return asyncio.run(main())
        with progress:
            manifest = asyncio.run(main())
            progress.update(runner, force=True)
            return manifest
    except ConfigError as error:
        _fail(str(error))
        raise


def _summarise(manifest: dict[str, Any], output_dir: Path) -> None:
    counts = manifest["counts"]
    outputs = ", ".join(f"{name}: {count}" for name, count in counts["outputs"].items())
    console.print(f"[bold]{escape(manifest['graph'])}[/bold] {manifest['status']} in {manifest['elapsed_s']:.1f}s: "
                  f"{counts['written']} records written ({outputs}), {counts['failed']} failed, "
                  f"{counts['dropped']} dropped -> {output_dir}", highlight=False)


@app.command()
def validate(graph: str, overrides: list[str] | None = SetOption, endpoint: str | None = EndpointOption,
             allow_code: list[str] | None = AllowCodeOption, trust_graph: bool = TrustGraphOption) -> None:
    """Check a graph without calling any model; list the Python it would run."""
    loaded = _load(graph, overrides, endpoint, allow_code, trust_graph)
    console.print(f"ok: {loaded.name} ({len(loaded.nodes)} nodes, {len(loaded.config.edges)} edges, "
                  f"outputs: {', '.join(o.name for o in loaded.config.outputs)})", highlight=False, markup=False)
    uses = loaded.code.uses
    console.print(f"python it runs: {'none besides built-in node types' if not uses else len(uses)}",
                  highlight=False, markup=False)
    for use in uses:
        console.print(f"  {use.where}: {use.target} <- {use.reason}", highlight=False, markup=False,
                      soft_wrap=True)
    if loaded.unchecked:
        console.print(f"not checked: keys read after {', '.join(loaded.unchecked)} and the outputs' keys, since "
                      f"what those nodes write is unknown (give @node(writes=[...]) or a TypedDict return)",
                      highlight=False, markup=False, soft_wrap=True)


@app.command()
def show(graph: str, overrides: list[str] | None = SetOption, allow_code: list[str] | None = AllowCodeOption,
         trust_graph: bool = TrustGraphOption) -> None:
    """Print the graph as Mermaid text."""
    print(_load(graph, overrides, None, allow_code, trust_graph).mermaid())


@app.command()
def nodes(name: str | None = typer.Argument(None, help="one node type, in full")) -> None:
    """List every node type, built-in and plugin, with its parameters."""
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
        print(json.dumps(api.read_manifest(output_dir), indent=2))
    except OSError:
        _fail(f"{output_dir} has no manifest.json; is it a run's output directory?")


@app.command("serve")
def serve_command(port: int = typer.Option(8765, help="port (0 picks a free one)"),
                  host: str = typer.Option("127.0.0.1", help="address; loopback by default"),
                  model_path: Path | None = typer.Option(None, "--model-path", help="another GGUF file")) -> None:
    """Serve the embedded model as an OpenAI-compatible API (chat and completions)."""
    from .config import ModelConfig
    from .serve import serve

    async def forever() -> None:
        config = ModelConfig(backend="local", path=str(model_path) if model_path else None)
        runner, url = await serve(host, port, config)
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
           compare: Path | None = typer.Option(None, "--compare", help="another run's dir, side by side")) -> None:
    """Write <output dir>/report.html: counts, drops, histograms, diversity, cost, examples."""
    from .report import build_report
    try:
        path = build_report(output_dir, compare)
    except SynthloomError as error:
        _fail(str(error))
        return
    console.print(f"report -> {path}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""Past one machine: `synthloom run G -o DIR --ray` runs the graph's seed shards as Ray tasks.

Each task is the ordinary streaming engine on shard k of n (records whose id hashes to k) writing into
`DIR/shards/k/`, an ordinary resumable run with its own journal and lock. The driver holds `DIR`'s lock
for the whole run and rebuilds `DIR/<output>.jsonl`, `failed.jsonl`, `dropped.jsonl` and `manifest.json`
(totals and per-shard figures) from the shards as each one finishes (`shard_merge`), so DIR reads like a
one-process run. Model budgets and dedup indexes are run-wide through two Ray actors (`ray_actors`).

Faults: a task whose worker dies is retried by Ray and resumes its shard (its journal is there; the dead
worker's flock went with it); `--resume` of the whole run resumes every shard; Ctrl-C asks every shard to
drain as a one-process run does. DIR must be on a filesystem every Ray node sees (one machine, NFS, ...).

    manifest = run_on_ray("quickstart", "runs/big", shards=8, address="auto",
                          endpoint="http://vllm-host:8000/v1")
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from ..engine.runner import OnFinished, Runner, RunOptions, finish
from ..engine.stops import DRAIN, STOP_NOW, StopRequests
from ..errors import ConfigError
from ..graph.load import load
from ..graph.record_pool import POOL_DIR
from ..graph.runnable import Graph, build_graph
from ..graph.seeds import seed_columns
from ..inspect.card import write_card
from ..sandbox.files import read_folders_from_environment, resolved_folders
from ..store.journal import MANIFEST, TRACES, Journal, data_files
from ..store.manifest import manifest_of, read_previous_manifest, write_manifest
from ..store.refusals import admit, refuse_a_changed_graph
from ..store.run_lock import RunLock
from ..store.shard_merge import (
    PLAN,
    SHARDS_DIR,
    add_figures,
    combine_counts,
    merge_shards,
    read_shard_manifest,
    run_status,
    shard_dir,
)
from .actors import PermitBank, RayPermits, RaySharedState, RunBoard

REPORT_EVERY_S = 0.3


@dataclass(frozen=True)
class GraphSource:
    """How a shard finds the graph: a workflow name or a file path, loaded in the worker (so a packaged
    workflow resolves in the worker's own install), or the config of a `Graph` built in Python. It carries
    the user's consent (modules allowed, key hosts, --trust-graph, folders it may read) as the driver resolved
    it, so every shard applies the policy the driver did."""

    reference: str | None = None
    overrides: tuple[str, ...] = ()
    endpoint: str | None = None
    raw: dict[str, Any] | None = None
    base_dir: str | None = None
    allow_code: tuple[str, ...] = ()
    trust_graph: bool = False
    allow_key_hosts: tuple[str, ...] = ()
    allow_read: tuple[str, ...] = ()

    @classmethod
    def of(cls, graph: Graph | str | Path, overrides: list[str] | None, endpoint: str | None,
           allow_code: list[str] | None = None, trust_graph: bool = False,
           allow_key_hosts: list[str] | None = None, allow_read: list[str | Path] | None = None) -> GraphSource:
        if isinstance(graph, Graph):
            if overrides or endpoint or allow_code or trust_graph or allow_key_hosts or allow_read:
                raise ConfigError("pass overrides, endpoint, allow_code, trust_graph, allow_key_hosts and allow_read "
                                  "to synthloom.load, not with a loaded graph")
            return cls(raw=copy.deepcopy(graph.loaded.raw), base_dir=str(graph.base_dir),
                       allow_code=graph.code.allowed, trust_graph=graph.code.trust_graph,
                       allow_key_hosts=graph.code.key_hosts.named,
                       allow_read=(*map(str, graph.code.read_folders), *map(str, read_folders_from_environment())))
        from ..sandbox.code_policy import allow_code_from_environment
        from ..sandbox.key_hosts import hosts_from_environment
        path = Path(graph)
        reference = str(path.resolve()) if path.exists() else str(graph)  # a name stays a name
        return cls(reference=reference, overrides=tuple(overrides or ()), endpoint=endpoint,  # the driver's env
                   allow_code=(*(allow_code or ()), *allow_code_from_environment()), trust_graph=trust_graph,
                   allow_key_hosts=(*(allow_key_hosts or ()), *hosts_from_environment()),
                   allow_read=tuple(map(str, (*resolved_folders(allow_read or ()), *read_folders_from_environment()))))

    def load(self, shard: tuple[int, int] | None = None) -> Graph:
        if self.reference is not None:
            extra = [f"seed.shard=[{shard[0]}, {shard[1]}]"] if shard else []
            return load(self.reference, [*self.overrides, *extra], self.endpoint,
                        allow_code=list(self.allow_code), trust_graph=self.trust_graph,
                        allow_key_hosts=list(self.allow_key_hosts), allow_read=list(self.allow_read))
        assert self.raw is not None and self.base_dir is not None
        raw = copy.deepcopy(self.raw)
        if shard:
            raw.setdefault("seed", {})["shard"] = list(shard)
        return self._build(raw, Path(self.base_dir))

    def load_shard(self, index: int, count: int) -> Graph:
        """Shard `index`'s graph: its part of the seed, and its part of each model's replicas (see
        `split_replicas`)."""
        graph = self.load((index, count))
        raw = split_replicas(graph, index, count)
        return graph if raw is None else self._build(raw, graph.base_dir, graph.code.key_hosts.named)

    def _build(self, raw: dict[str, Any], base: Path, hosts: tuple[str, ...] = ()) -> Graph:
        """A graph from its config, under this source's consent (`hosts`: those the user named for it)."""
        from ..config.loader import LoadedConfig, SourceMap, config_hash, validate_raw
        from ..sandbox.code_policy import CodePolicy
        source_map = SourceMap("<graph>")
        read_folders = resolved_folders(self.allow_read)
        loaded = LoadedConfig(validate_raw(raw, source_map), raw, source_map, base,
                              config_hash(raw, base, read_folders))
        code = CodePolicy.for_graph(base, self.allow_code, loaded.config.run.allow_code, self.trust_graph,
                                    allow_key_hosts=(*self.allow_key_hosts, *hosts), allow_read=read_folders)
        return build_graph(loaded, seed_columns(loaded.config.seed, base), code)


def split_replicas(graph: Graph, index: int, count: int) -> dict[str, Any] | None:
    """A model with at least as many replicas as there are shards: shard k talks to replicas k, k+n, ...
    with the matching share of `max_concurrency`. Each replica then hears from one shard, whose replica
    chooser and adaptive limit see all of that server's load (shards choosing independently among shared
    replicas overrun one now and then). Fewer replicas than shards: every shard uses all of them. The
    run-wide budget (the permit bank) holds either way. None: nothing to split."""
    raw = copy.deepcopy(graph.loaded.raw)
    changed = False
    for name in graph.models_used():
        config = graph.config.models.get(name)
        if config is None or config.backend != "openai" or count < 2:
            continue
        urls = config.urls()
        if len(urls) < count:
            continue
        mine = urls[index::count]
        raw["models"][name]["base_url"] = mine
        raw["models"][name]["max_concurrency"] = max(1, config.max_concurrency * len(mine) // len(urls))
        changed = True
    return raw if changed else None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray extra: pip install 'synthloom[ray]'") from None
    return ray


# -- the shard's side (runs in a Ray worker) ------------------------------------------------------------

def _shard_figures(runner: Runner) -> dict[str, Any]:
    counts = runner.counts
    return {"done": counts.written + counts.failed + counts.dropped, "skipped": counts.skipped,
            "failed": counts.failed, "dropped": counts.dropped, "tokens": runner.tokens(),
            "drop_reasons": dict(counts.drop_reasons)}


async def _report(runner: Runner, board: Any, permits: RayPermits, index: int) -> None:
    """Now and then: send this shard's figures to the board, trade budget leases with the bank; a stop
    asked by the driver drains the shard."""
    stopping = False
    while True:
        await asyncio.sleep(REPORT_EVERY_S)
        await permits.sync()
        stop = await board.report.remote(index, _shard_figures(runner))
        if stop and not stopping:
            stopping = True
            runner.request_stop()


async def _shard_main(runner: Runner, permits: RayPermits, board: Any, index: int) -> dict[str, Any]:
    await permits.start()
    reporter = asyncio.create_task(_report(runner, board, permits, index))
    try:
        return await runner.run()
    finally:
        reporter.cancel()
        await permits.finish()
        await board.report.remote(index, _shard_figures(runner))


def run_shard(source: GraphSource, root: str, index: int, count: int, options: dict[str, Any],
              board: Any, bank: Any, budgets: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """One shard as a Ray task. A retry after its worker died finds the journal the dead attempt left and
    resumes it (a fresh run starts with no shard directories, so a journal here is always this run's)."""
    graph = source.load_shard(index, count)
    directory = shard_dir(Path(root), index)
    resume = bool(options.get("resume")) or Journal(directory, graph.loaded.hash).holds_a_run()
    permits = RayPermits(bank, index, budgets, count)
    run_options = RunOptions(**{**options, "resume": resume, "overwrite": False}, permits=permits,
                             shared_state=RaySharedState(board), manifest_every_s=2.0)
    return asyncio.run(_shard_main(Runner(graph, directory, run_options), permits, board, index))


def replay_shard(source: GraphSource, root: str, index: int, count: int, options: dict[str, Any],
                 board: Any) -> None:
    """Before a resumed run goes on, each shard's kept dedup entries go back into the shared index, so a
    shard that resumes early already sees what shards that finished earlier had kept."""
    directory = shard_dir(Path(root), index)
    if not (directory / POOL_DIR).exists():
        return
    graph = source.load((index, count))
    run_options = RunOptions(resume=True, use_cache=False, retry_failed=options.get("retry_failed", True),
                             shared_state=RaySharedState(board))
    asyncio.run(Runner(graph, directory, run_options).replay_only())


# -- the driver ---------------------------------------------------------------------------------------

def run_on_ray(graph: Graph | str | Path, output_dir: str | Path, shards: int | None = None, *,
               overrides: list[str] | None = None, endpoint: str | None = None, address: str | None = None,
               num_cpus_per_shard: float = 1, on_progress: Callable[[dict[str, Any]], None] | None = None,
               stops: StopRequests | None = None, allow_code: list[str] | None = None, trust_graph: bool = False,
               allow_key_hosts: list[str] | None = None, allow_read: list[str | Path] | None = None,
               **options: Any) -> dict[str, Any]:
    """Run the graph as `shards` Ray tasks into one run directory; returns its manifest.

    `address`: None or "local" starts a Ray on this machine (or joins the one `RAY_ADDRESS` names),
    "auto" joins the running cluster, "ray://host:10001" goes through Ray Client. `options` are those of
    `synthloom.run` (limit, resume, overwrite, use_cache, retry_failed, trace, max_in_flight, ...);
    `on_progress` gets the run's summed figures (done, skipped, failed, dropped, tokens, drop_reasons) and
    the shards finished (shards_done of shards) every ~0.3 s.
    `allow_code`, `trust_graph`, `allow_key_hosts`, `allow_read`: as for `synthloom.load`; they travel to every
    shard. `on_finished` (in `options`): as `RunOptions.on_finished`, called by the driver alone; by default the
    dataset card's writer, as the API and CLI pass it to a one-process run."""
    ray = _import_ray()
    source = GraphSource.of(graph, overrides, endpoint, allow_code, trust_graph, allow_key_hosts, allow_read)
    loaded = source.load()  # a bad graph is refused here, once, not in every task
    if shards is not None and shards < 1:
        raise ConfigError("--shards must be at least 1")
    if "cache_dir" not in options and os.environ.get("SYNTHLOOM_CACHE_DIR"):
        options["cache_dir"] = Path(os.environ["SYNTHLOOM_CACHE_DIR"])  # workers use the driver's cache
    root = Path(output_dir).resolve()
    lock = RunLock(root)
    lock.acquire()
    try:
        count = _plan(root, loaded, shards, resume=bool(options.get("resume")),
                      overwrite=bool(options.pop("overwrite", False)), cluster=lambda: _start_ray(ray, address))
        _start_ray(ray, address)
        on_finished = options.pop("on_finished", write_card)  # the driver's, once: shards write no card
        return _Driver(ray, source, loaded, root, count, num_cpus_per_shard, on_progress, on_finished, options,
                       stops or StopRequests()).run()
    finally:
        lock.release()


def _start_ray(ray: Any, address: str | None) -> int:
    """Join or start Ray; returns the cluster's CPUs (the default number of shards)."""
    if not ray.is_initialized():
        target = None if address in (None, "", "local") else address
        try:
            ray.init(address=target, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                     logging_level=logging.ERROR)  # our one-line errors and progress bar, not Ray's INFO lines
        except ConnectionError as error:
            raise ConfigError(f"cannot reach the Ray cluster at --address {address}: {error}") from None
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _data_files(loaded: Graph) -> list[str]:
    return data_files([output.name for output in loaded.config.outputs])


def _plan(root: Path, loaded: Graph, shards: int | None, *, resume: bool, overwrite: bool,
          cluster: Callable[[], int]) -> int:
    """How many shards the run has: the number it started with (kept in DIR/ray.json), or a new run's.
    The directory is refused or cleared by the rules a one-process run applies (`refusals`)."""
    plan_path = root / PLAN
    if admit(root, _data_files(loaded), resume=resume, overwrite=overwrite, ray=True):
        refuse_a_changed_graph(root, loaded.loaded.hash, ray=True)
        planned = int(json.loads(plan_path.read_text(encoding="utf-8"))["shards"])
        if shards is not None and shards != planned:
            raise ConfigError(f"{root} was started with --shards {planned}; resume it with the same "
                              f"number, or leave --shards out")
        return planned
    count = shards if shards is not None else cluster()
    plan_path.write_text(json.dumps({"graph": loaded.name, "config_hash": loaded.loaded.hash, "shards": count}),
                         encoding="utf-8")
    return count


def _budgets(loaded: Graph) -> dict[str, dict[str, float | None]]:
    """Run-wide budgets for the models that call a server (an embedded model lives in each worker). A
    batch model has none: its calls are lines waiting at the provider, not requests holding a server's
    slots, and a one-process run bounds them by `batch.max_requests` alone too (a lease of
    `max_concurrency` would let a whole run's batches hold that many lines)."""
    models = loaded.config.models
    return {name: {"max_concurrency": models[name].max_concurrency, "rpm": models[name].rpm,
                   "tpm": models[name].tpm}
            for name in loaded.models_used()
            if name in models and models[name].backend == "openai" and models[name].batch is None}


class _Driver:
    def __init__(self, ray: Any, source: GraphSource, loaded: Graph, root: Path, count: int,
                 num_cpus_per_shard: float, on_progress: Callable[[dict[str, Any]], None] | None,
                 on_finished: OnFinished | None, options: dict[str, Any], stops: StopRequests):
        self.ray, self.source, self.loaded, self.root, self.count = ray, source, loaded, root, count
        self.num_cpus, self.on_progress = num_cpus_per_shard, on_progress
        self.options = options
        self.on_finished = on_finished
        self.stops = stops
        self.shard_dirs = [shard_dir(root, index) for index in range(count)]
        self.previous = read_previous_manifest(root / MANIFEST) if options.get("resume") else {}
        self.started = time.time()
        self.errors: dict[int, str] = {}
        self.finished = 0
        self.merged: dict[str, int] = {}
        self.interrupted = False
        self.budgets = _budgets(loaded)
        self.board = ray.remote(RunBoard).options(num_cpus=0).remote()
        self.bank = ray.remote(PermitBank).options(num_cpus=0).remote(self.budgets)

    def run(self) -> dict[str, Any]:
        ray = self.ray
        for directory in self.shard_dirs:
            directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.options.get("resume"):
                replay = ray.remote(num_cpus=self.num_cpus)(replay_shard)
                ray.get([replay.remote(self.source, str(self.root), index, self.count, self.options, self.board)
                         for index in range(self.count)])
            task = ray.remote(num_cpus=self.num_cpus, max_retries=3)(run_shard)
            pending = {task.remote(self.source, str(self.root), index, self.count, self.options, self.board,
                                   self.bank, self.budgets): index for index in range(self.count)}
            try:
                self._wait(pending)
            except KeyboardInterrupt:
                self._drain(pending)
            self._progress()
        finally:
            manifest = self._write("finished")
            for actor in (self.board, self.bank):
                ray.kill(actor)
        return self._card(manifest)

    def _card(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """README.md, the dataset card, at the top of the run directory as a one-process run leaves it
        (a shard writes none: its runner is given no `on_finished`)."""
        manifest["message"] = finish(self.on_finished, self.root, manifest, self.loaded, manifest["message"])
        return manifest

    def _wait(self, pending: dict[Any, int]) -> None:
        while pending:
            if self.stops.count >= DRAIN and not self.interrupted:
                self._drain(pending)  # a request the CLI's StopRequests caught (SIGINT, SIGTERM)
                return
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=REPORT_EVERY_S)
            for ref in ready:
                self._settle(pending.pop(ref), ref)
            if ready:
                self._write("running")
            self._progress()

    def _settle(self, index: int, ref: Any) -> None:
        self.finished += 1
        try:
            self.ray.get(ref)
        except Exception as error:  # the task's own error (a shard refused, or its retries ran out)
            cause = getattr(error, "cause", None) or error
            self.errors[index] = f"shard {index}: {type(cause).__name__}: {str(cause).strip().splitlines()[-1]}"

    def _drain(self, pending: dict[Any, int]) -> None:
        """Ctrl-C: every shard stops admitting records and drains; a second Ctrl-C (or the drain period
        running out) ends the tasks at once, which their journals make safe."""
        self.interrupted = True
        self.stops.count = max(self.stops.count, DRAIN)
        self._ask(self.board.stop.remote())
        deadline = time.monotonic() + self.loaded.config.run.drain_seconds + 5
        try:
            while pending and time.monotonic() < deadline and self.stops.count < STOP_NOW:
                ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=REPORT_EVERY_S)
                for ref in ready:
                    self._settle(pending.pop(ref), ref)
                self._progress()
        except KeyboardInterrupt:
            pass
        for ref in pending:
            self.ray.cancel(ref, force=True)

    def _ask(self, ref: Any, default: Any = None) -> Any:
        """An actor's answer; `default` if the actor is gone (the run still ends with its shards' files)."""
        try:
            return self.ray.get(ref, timeout=30)
        except Exception:
            return default

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        figures = self._ask(self.board.progress_of.remote(), {})
        totals = _summed(list(figures.values()))
        self.on_progress({**totals, "shards": self.count, "shards_done": self.finished})

    def _write(self, phase: str) -> dict[str, Any]:
        files = _data_files(self.loaded)
        if not self.options.get("trace"):
            files.remove(TRACES)  # a one-process run without --trace writes no traces.jsonl either
        self.merged = merge_shards(self.root, self.shard_dirs, files)
        manifest = self._manifest(phase)
        write_manifest(self.root, manifest)
        return manifest

    def _manifest(self, phase: str) -> dict[str, Any]:
        shards = [read_shard_manifest(self.root, index) or {} for index in range(self.count)]
        statuses = [shard.get("status", "not started") for shard in shards]
        if phase == "running":
            status, message = "running", ""
        elif self.interrupted:
            status, message = "interrupted", "stopped by the user; run again with --resume to finish"
        elif self.errors:
            status, message = "failed", "; ".join(self.errors.values()) + "; fix it and run again with --resume"
        else:
            status = run_status(statuses)
            message = "; ".join(f"shard {index}: {shard['message']}" for index, shard in enumerate(shards)
                                if shard.get("message") and shard.get("status") != "completed")
        ended = time.time() if phase != "running" else None
        outputs = {output.name: self.merged.get(f"{output.name}.jsonl", 0) for output in self.loaded.config.outputs}
        ran = [shard for shard in shards if shard]
        caches = [shard["cache"] for shard in ran if shard.get("cache")]
        tool_threads = _summed([shard.get("tool_threads") or {} for shard in ran])  # every shard's own threads
        return manifest_of(
            self.loaded, status=status, message=message, started=self.started, ended=ended,
            previous=self.previous, counts=combine_counts(ran, outputs),
            part_counts=_summed([{key: (shard.get("parts") or [{}])[-1].get(key, 0) for key in PART_COUNTS}
                                 for shard in ran], dict.fromkeys(PART_COUNTS, 0)),
            max_in_flight=sum(int(shard.get("max_in_flight") or 0) for shard in ran),
            nodes=_summed([shard.get("nodes") or {} for shard in shards]),
            models=_summed([shard.get("models") or {} for shard in shards]),
            concurrency=self._ask(self.bank.figures.remote(), {}),
            cache=_summed(caches) if caches else None,  # one cache folder, each shard's hits and misses
            batches=_summed([shard.get("batches") or {} for shard in ran]),
            part_extra={"shards": self.count},
            **({"tool_threads": tool_threads} if tool_threads else {}),
            ray={"shards": self.count},
            shards=[{"index": index, "dir": f"{SHARDS_DIR}/{index}", "status": statuses[index],
                     "elapsed_s": shard.get("elapsed_s"), "counts": shard.get("counts")}
                    for index, shard in enumerate(shards)])


PART_COUNTS = ("seeded", "written", "failed", "dropped")
"""This part's figures in the manifest's `parts` (each shard's last part is this part's: every shard runs)."""


def _summed(figures: list[dict[str, Any]], start: dict[str, Any] | None = None) -> dict[str, Any]:
    return reduce(add_figures, figures, start or {})


def merge_outputs(output_dir: str | Path, names: list[str]) -> dict[str, int]:
    """For shards run by hand (`synthloom run G --shard k/n -o DIR/shard-k`): rebuild `DIR/<name>.jsonl`
    from every `DIR/shard-*` (and `DIR/shards/*`), each record's lines once; returns line counts."""
    root = Path(output_dir)
    directories = sorted([*root.glob("shard-*"), *(root / SHARDS_DIR).glob("*")])
    counts = merge_shards(root, [path for path in directories if path.is_dir()], [f"{name}.jsonl" for name in names])
    return {name: counts[f"{name}.jsonl"] for name in names}

"""Run a graph over a stream of seed records, one record at a time, many records at once.

Each record walks the graph on its own: it moves to its next node the moment its current node finishes,
so there are no batch barriers. At most `max_in_flight` records are open, which keeps memory flat and
every model's concurrency busy. A failing node fails its record (to failed.jsonl), never the run, unless
the recent failure rate says something is broken for everyone.
"""
from __future__ import annotations

import asyncio
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.loader import pinpoint
from ..errors import ConfigError, ModelCallError, OutputWriteError, RunAborted, SynthloomError
from ..graph.context import RecordUsage, RunContext, record_usage
from ..graph.node import Drop
from ..graph.outputs import OutputShaper
from ..graph.runnable import Graph
from ..graph.seeds import BadSeed, read_seeds, row_id
from ..graph.shared_state import LocalSharedState, SharedStateProvider
from ..models.base import call_owner
from ..models.cache import ResponseCache
from ..models.clients import ModelPool
from ..models.permits import PermitProvider
from ..models.stats import NodeStats
from ..sandbox.run_paths import path_in_run
from ..store.journal import (
    DROPPED,
    DROPPED_STATUS,
    FAILED,
    FAILED_STATUS,
    MANIFEST,
    WRITTEN,
    Journal,
    JsonlWriter,
    data_files,
    sync_directory,
)
from ..store.manifest import build_manifest, read_previous_manifest, write_manifest
from ..store.refusals import admit, refuse_a_changed_graph
from ..store.run_lock import RunLock
from .trace import TRACES, RecordTrace, record_trace
from .walk import GraphWalk, NodeFailure

RESOURCE_ERRORS: tuple[type[BaseException], ...] = (MemoryError, RecursionError)
"""A record that ran out of memory or stack met a bound (a huge input, a deep structure), not a bug in the
code: its failure record names the bound in one line, without a traceback."""


def _failure_message(error: BaseException) -> str:
    """The failure record's message: one line, and for a resource error the bound it met."""
    if isinstance(error, MemoryError):
        return "the record needed more memory than the process may use (a huge input?)"
    if isinstance(error, RecursionError):
        return "the record's data is nested too deeply to process (maximum recursion depth exceeded)"
    return str(error)


@dataclass
class Counts:
    seeded: int = 0
    written: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0
    drop_reasons: Counter[str] = field(default_factory=Counter)
    failure_types: Counter[str] = field(default_factory=Counter)
    output_lines: Counter[str] = field(default_factory=Counter)
    """Lines per output file."""

    def add(self, other: Counts) -> None:
        """Take in what `other` settled (its written, failed and dropped records and their lines)."""
        self.written += other.written
        self.failed += other.failed
        self.dropped += other.dropped
        self.drop_reasons.update(other.drop_reasons)
        self.failure_types.update(other.failure_types)
        self.output_lines.update(other.output_lines)


OnFinished = Callable[[Path, dict[str, Any], Graph], object]


def finish(on_finished: OnFinished | None, directory: Path, manifest: dict[str, Any], graph: Graph,
           message: str) -> str:
    """Call a finished run's `on_finished` (the dataset card) after its manifest is written, in either run
    path; returns the run's message, with the failure's text added: a failing card never costs the outcome."""
    if on_finished is None:
        return message
    try:
        on_finished(directory, manifest, graph)
    except Exception as error:
        message = "; ".join(filter(None, [message, str(error)]))
    return message


@dataclass
class RunOptions:
    limit: int | None = None
    resume: bool = False
    overwrite: bool = False
    use_cache: bool = True
    cache_dir: Path | None = None
    max_in_flight: int | None = None
    retry_base_delay: float = 0.5
    retry_failed: bool = True
    """On --resume, run again the records that failed (False: keep them failed)."""
    trace: bool = False
    """Write each record's node steps (rendered input, output, edges, tokens) to traces.jsonl."""
    on_progress: Callable[[Runner], None] | None = None
    manifest_every_s: float = 5.0
    watch_every_s: float = 0.1
    """How often the output directory is looked at (vanished, replaced, read-only stop the run)."""
    """How often manifest.json is rewritten while the run goes on, so a kill -9 loses little of its figures."""
    permits: PermitProvider | None = None
    """Model budgets shared with other processes (`run --ray`); None: this process's own."""
    shared_state: SharedStateProvider | None = None
    """Where run-wide indexes live (`run --ray`: one Ray actor for every shard); None: this process."""
    cancel_batches: bool = False
    """A run that stops early cancels its pending provider batches (default: they run on, paid for, and
    `--resume` collects their answers)."""
    on_finished: OnFinished | None = None
    """Called with the run directory, its final manifest and the graph once manifest.json is written, while
    the run still holds the directory: the API and the CLI pass the dataset card's writer (`write_card`), so
    the engine knows nothing of cards. Its exception's text goes into the run's message; it is never raised."""


class Runner:
    def __init__(self, graph: Graph, output_dir: Path, options: RunOptions | None = None):
        self.graph = graph
        self.output_dir = Path(output_dir)
        self.options = options or RunOptions()
        config = graph.config
        cache = ResponseCache(self.options.cache_dir) if self.options.use_cache else None
        self.models = ModelPool(config.models, cache, retry_base_delay=self.options.retry_base_delay,
                                permits=self.options.permits, run_dir=self.output_dir,
                                cancel_batches=self.options.cancel_batches)
        self.ctx = RunContext(models=self.models, output_dir=self.output_dir, base_dir=graph.base_dir,
                              read_folders=graph.code.read_folders,
                              node_stats={name: NodeStats() for name in graph.nodes}, graph_name=graph.name,
                              shared_state=self.options.shared_state or LocalSharedState(), tools=graph.tools)
        self.walker = GraphWalk(graph, self.ctx)
        self.shapers = [OutputShaper(output) for output in config.outputs]
        self._flush_scheduled = False
        self.writers = {shaper.name: JsonlWriter(path_in_run(self.output_dir, None, shaper.name),
                                                 self._schedule_flush)
                        for shaper in self.shapers}
        self.failed_writer = JsonlWriter(self.output_dir / FAILED, self._schedule_flush)
        self.dropped_writer = JsonlWriter(self.output_dir / DROPPED, self._schedule_flush)
        self.trace_writer = JsonlWriter(self.output_dir / TRACES, self._schedule_flush)
        self.journal = Journal(self.output_dir, graph.loaded.hash, self._schedule_flush)
        self.lock = RunLock(self.output_dir)
        self._kept_lines: dict[str, int] = dict.fromkeys(self.writers, 0)
        """Lines per output that earlier parts wrote and this part kept."""
        self.previous_manifest: dict[str, Any] = {}
        self.counts = Counts()
        """Settled records the journal holds (its lines reached the OS): what the summary and manifest say."""
        self._unjournaled = Counts()
        """Records settled in this loop tick: counted once the tick's journal lines are written, forgotten
        if a write fails (their journal lines never land, and --resume runs them again)."""
        self.max_in_flight = self.options.max_in_flight or config.run.max_in_flight or self._default_in_flight()
        self.status = "running"
        self.message = ""
        self.started = time.time()
        self.ended: float | None = None
        self._recent: deque[bool] = deque(maxlen=config.run.failure_window)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _default_in_flight(self) -> int:
        configs = self.models.configs
        # twice what the models take at once, so a record is always ready when a slot frees
        total = sum(configs[name].calls_at_once() for name in self.graph.models_used() if name in configs)
        return max(8, min(4096, 2 * total))

    # -- the run -------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        options = self.options
        resuming = options.resume and not options.overwrite and self.journal.holds_a_run()
        files = data_files(list(self.writers))
        try:
            if resuming:  # nodes restoring their state (pools, dedup) need the settled ids in setup
                self.lock.acquire()
                refuse_a_changed_graph(self.output_dir, self.graph.loaded.hash, ray=False)
                self.journal.load(retry_failed=options.retry_failed)
                self.ctx.resume_done = self.journal.ledger
            await self._prepare()
            if not resuming:
                self.lock.acquire()
            if options.resume and not options.overwrite:
                self.previous_manifest = read_previous_manifest(self.output_dir / MANIFEST)
            resuming = admit(self.output_dir, files, resume=options.resume, overwrite=options.overwrite, ray=False)
            kept = self.journal.start(resuming=resuming, data_files=files, started=self.started)
        except BaseException as error:
            self.journal.close()
            self.lock.release()
            await self.models.close()
            await self.ctx.tools.close()
            if isinstance(error, ConfigError):  # a model's missing API key, a node's missing pool file
                raise pinpoint(error, self.graph.loaded.source_map) from None
            raise
        self._kept_lines = {name: kept[f"{name}.jsonl"] for name in self.writers}
        self.counts.skipped = self.journal.done_count
        reporter = asyncio.create_task(self._write_manifest_now_and_then())
        watcher = asyncio.create_task(self._watch_directory())
        try:
            await self._feed()
            self._flush_tick()  # the last records settled count only once their journal lines are written
            if self.status == "running":
                self.status = "completed"
                self._judge_failures()
        except RunAborted as error:
            self.status, self.message = "aborted", str(error)
        except asyncio.CancelledError:
            self.status = "interrupted"
            raise
        finally:
            reporter.cancel()
            watcher.cancel()
            await self._finish()
        return self.manifest

    async def replay_only(self) -> None:
        """Set the nodes up as `--resume` would (restoring run-wide indexes from this directory's pools),
        then stop without touching a record: under `--ray`, every shard's shared state is rebuilt before
        any shard goes on."""
        self.lock.acquire()
        try:
            self.journal.load(retry_failed=self.options.retry_failed, announce_retries=False)
            self.ctx.resume_done = self.journal.ledger
            await self._prepare()
        finally:
            self.ctx.close_pools()
            await self.models.close()
            await self.ctx.tools.close()
            self.journal.close()
            self.lock.release()

    async def _prepare(self) -> None:
        """Everything that can refuse the run (a missing API key, model file or pool file) happens before
        the output directory is touched (but for the lock of a resumed run), so a mistake never leaves a
        half-started run behind."""
        await self.models.prepare(self.graph.models_used())
        for node in self.graph.nodes.values():
            await node.setup(self.ctx)

    async def _feed(self) -> None:
        slots = asyncio.Semaphore(self.max_in_flight)
        config = self.graph.config
        seeds = read_seeds(config.seed, self.graph.base_dir, self.options.limit)
        ledger = self.journal.open_ledger()
        try:
            for item in seeds:
                if self._stop.is_set():
                    break
                if isinstance(item, BadSeed):
                    self._fail_unreadable_seed(item)
                    continue
                record_id = ledger.number(row_id(item, config.seed.id_field))
                if record_id in ledger:  # settled by an earlier part of the run
                    continue
                await slots.acquire()
                if self._stop.is_set():
                    slots.release()
                    break
                self.counts.seeded += 1
                task = asyncio.create_task(self._traced(record_id, item) if self.options.trace
                                           else self._process(record_id, item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda _: slots.release())
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.status == "aborting":
            raise RunAborted(self.message)

    def request_stop(self, drain_seconds: float | None = None) -> None:
        """Ctrl-C: admit no more records; give in-flight ones `drain_seconds`, then cancel them.
        A second call cancels at once. Cancelled records are not journaled, so --resume redoes them."""
        if self._stop.is_set():
            for task in list(self._tasks):
                task.cancel()
            return
        self._stop.set()
        self.status = "interrupted"
        self.message = "stopped by the user; run again with --resume to finish"
        wait = self.graph.config.run.drain_seconds if drain_seconds is None else drain_seconds
        asyncio.get_running_loop().call_later(wait, lambda: [task.cancel() for task in list(self._tasks)])

    # -- one record ----------------------------------------------------------------------------------

    async def _process(self, record_id: str, seed: dict[str, Any]) -> None:
        state: dict[str, Any] = dict(seed)
        state["id"] = record_id
        usage = RecordUsage()
        record_usage.set(usage)
        retried = self.journal.times_retried(record_id)  # a failed record taken up again makes new calls
        call_owner.set(f"{record_id} (retry {retried})" if retried else record_id)
        try:
            outcome = await self.walker.walk(state)
        except NodeFailure as failure:
            self._record_failure(record_id, seed, failure.node, failure.error)
            return
        except Exception as error:  # a bug of ours must still not lose the record
            self._record_failure(record_id, seed, "engine", error)
            return
        if isinstance(outcome, tuple):
            node_name, drop = outcome
            self._record_drop(record_id, node_name, drop, state)
            return
        try:
            metadata = {"id": record_id, "graph": self.graph.name, "config_hash": self.graph.loaded.hash,
                        **usage.as_dict()}
            rows = {shaper.name: shaper.shape(state, metadata) for shaper in self.shapers}
        except SynthloomError as error:
            self._record_failure(record_id, seed, "outputs", error)
            return
        try:
            for name, lines in rows.items():
                self.writers[name].write(lines)
            self.journal.mark(record_id, WRITTEN)
        except OutputWriteError as error:
            self._stop_on_write_error(error)
            return
        self._unjournaled.written += 1
        self._unjournaled.output_lines.update({name: len(lines) for name, lines in rows.items()})
        self._settle(ok=True)

    async def _traced(self, record_id: str, seed: dict[str, Any]) -> None:
        """`--trace`: the record's node steps go to traces.jsonl once it has settled (a cancelled record,
        redone by --resume, writes none), so every trace line's id is a journaled record's."""
        trace = RecordTrace(record_id)
        record_trace.set(trace)
        await self._process(record_id, seed)
        try:
            self.trace_writer.write(trace.lines())
        except OutputWriteError as error:
            self._stop_on_write_error(error)

    # -- outcomes ------------------------------------------------------------------------------------

    def _record_failure(self, record_id: str, seed: dict[str, Any], node: str, error: BaseException) -> None:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # interrupted, not failed: never journaled, so --resume redoes it
        entry: dict[str, Any] = {"id": record_id, "node": node, "error_type": type(error).__name__,
                                 "message": _failure_message(error), "attempts": getattr(error, "attempts", 1),
                                 "seed": seed}
        if not isinstance(error, (SynthloomError, ModelCallError, *RESOURCE_ERRORS)):
            entry["traceback"] = traceback.format_exception(error, limit=-3)
        reason = f"{node}: {type(error).__name__}"
        try:
            self.failed_writer.write([entry])
            self.journal.mark(record_id, FAILED_STATUS, reason)
        except OutputWriteError as write_error:
            self._stop_on_write_error(write_error)
            return
        self._unjournaled.failed += 1
        self._unjournaled.failure_types[reason] += 1
        self._settle(ok=False)

    def _fail_unreadable_seed(self, bad: BadSeed) -> None:
        """Not journaled (it has no id): every part of the run reads the row again and reports it again."""
        try:
            self.failed_writer.write([{"id": None, "node": "seed", "error_type": "BadSeed",
                                       "message": f"{bad.where}: {bad.message}", "attempts": 0}])
        except OutputWriteError as error:
            self._stop_on_write_error(error)
            return
        self._unjournaled.failed += 1
        self._unjournaled.failure_types["seed: BadSeed"] += 1

    def _record_drop(self, record_id: str, node: str, drop: Drop, state: dict[str, Any]) -> None:
        """The record's state goes with it, so one can see what a filter or dedup turned away."""
        reason = f"{node}: {drop.reason}"
        try:
            if self.graph.config.run.write_dropped:
                self.dropped_writer.write([{"id": record_id, "node": node, "reason": drop.reason,
                                            **({"detail": drop.detail} if drop.detail else {}), "state": state}])
            self.journal.mark(record_id, DROPPED_STATUS, reason)
        except OutputWriteError as error:
            self._stop_on_write_error(error)
            return
        self._unjournaled.dropped += 1
        self._unjournaled.drop_reasons[reason] += 1
        self._settle(ok=True)

    def _stop_on_write_error(self, error: OutputWriteError) -> None:
        """A full disk or a read-only directory: admit nothing more, send nothing more to the models. The
        journal lists only records whose lines are whole, so --resume finishes the run exactly once."""
        if self.status != "aborting":
            self.status = "aborting"
            self.message = (f"{error}; stopped sending records. Free space (or fix the permissions) and run "
                            f"again with --resume to finish")
        self._cancel_all_but_current()

    async def _watch_directory(self) -> None:
        """Open files would go on writing into a removed or moved directory while the run counted records
        that are not there: a vanished, replaced or read-only directory stops the run at once (exit 1)."""
        while True:
            await asyncio.sleep(self.options.watch_every_s)
            problem = self.lock.directory_problem()
            if problem is not None:
                self.status = "aborting"
                self.message = (f"{problem}; stopped sending records. Restore it (or choose it again) and run "
                                f"again with --resume to finish")
                self._cancel_all_but_current()
                return

    def _cancel_all_but_current(self) -> None:
        self._stop.set()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    def _settle(self, *, ok: bool) -> None:
        self._recent.append(ok)
        run = self.graph.config.run
        if len(self._recent) == self._recent.maxlen and self.status == "running":
            rate = self._recent.count(False) / len(self._recent)
            if rate > run.max_failure_rate:
                self.status = "aborting"
                self.message = self._failure_message(f"{rate:.0%} of the last {len(self._recent)} records failed")
                self._cancel_all_but_current()

    def _failure_message(self, what: str) -> str:
        types = Counter(self.totals()["failure_types"]) + self._unjournaled.failure_types  # this tick's too
        top = max(types, key=lambda key: types[key]) if types else "unknown"
        return (f"stopped: {what} (max_failure_rate {self.graph.config.run.max_failure_rate:g}); most often "
                f"at {top}. See {self.output_dir / FAILED}; fix it and run again with --resume")

    def _judge_failures(self) -> None:
        """At the end, the failure share over every settled record of the run (all parts) is judged too: a
        run too small for the rolling window, or one that wrote nothing, never ends as 'completed'."""
        totals = self.totals()
        settled = totals["written"] + totals["dropped"] + totals["failed"]
        failed = totals["failed"]
        if not failed:
            return
        limit = self.graph.config.run.max_failure_rate
        if failed / settled > limit or (totals["written"] == 0 and totals["dropped"] == 0):
            self.status = "failed"
            self.message = self._failure_message(f"{failed} of {settled} records failed")

    async def _write_manifest_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(self.options.manifest_every_s)
            if self.options.on_progress and self.models.batches():  # no record settles while batches wait
                self.options.on_progress(self)
            if not self.lock.directory_is_ours():
                continue  # never re-create a vanished directory, nor write into its replacement
            try:
                write_manifest(self.output_dir, self.manifest)
            except OSError:
                pass  # a full disk: the write error of the records themselves is what gets reported

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_tick)

    def _flush_tick(self) -> None:
        """Once per loop tick: every record settled in it reaches the OS in one write per file, the data
        files first and the journal last, so a journaled id's lines are always there (exactly once)."""
        self._flush_scheduled = False
        settled, self._unjournaled = self._unjournaled, Counts()
        try:
            for writer in self._data_writers():
                writer.flush_pending()
        except OutputWriteError as error:
            self.journal.writer.discard_pending()
            self._stop_on_write_error(error)
            return
        try:
            self.journal.writer.flush_pending()
        except OutputWriteError as error:  # the writer took back what it began to write
            self._stop_on_write_error(error)
            return
        self.counts.add(settled)
        if self.options.on_progress:  # the counts change here, once the tick's lines are written
            self.options.on_progress(self)

    def _data_writers(self) -> list[JsonlWriter]:
        return [*self.writers.values(), self.failed_writer, self.dropped_writer, self.trace_writer]

    async def _finish(self) -> None:
        for node in self.graph.nodes.values():
            try:
                await node.teardown(self.ctx)
            except Exception as error:  # a teardown must not hide the run's own outcome
                self.message = (self.message + f"; teardown of a node failed: {error}").strip("; ")
        await self.models.close()
        await self.ctx.tools.close()
        self.ended = time.time()
        self._flush_tick()
        if self.status == "aborting":  # the last lines could not be written
            self.status = "aborted"
        for writer in self._data_writers():
            writer.close()
        self.journal.close()
        self.ctx.close_pools()
        manifest = self.manifest
        if self.lock.directory_is_ours():  # a vanished directory is not re-created, a replacement not written
            try:
                write_manifest(self.output_dir, manifest)
            except OSError as error:
                self.message = (self.message + f"; manifest.json not written: {error.strerror or error}").strip("; ")
            self.message = finish(self.options.on_finished, self.output_dir, manifest, self.graph, self.message)
            sync_directory(self.output_dir)
        self.lock.release()

    # -- reporting -----------------------------------------------------------------------------------

    @property
    def manifest(self) -> dict[str, Any]:
        return build_manifest(self)

    @property
    def output_counts(self) -> dict[str, int]:
        """Lines per output file, of journaled records only."""
        return {name: kept + self.counts.output_lines[name] for name, kept in self._kept_lines.items()}

    def totals(self) -> dict[str, Any]:
        """The whole run's outcome so far: this part plus what the journal says earlier parts settled."""
        previous, reasons = self.journal.previous, self.journal.previous_reasons
        return {
            "written": self.counts.written + previous[WRITTEN],
            "dropped": self.counts.dropped + previous[DROPPED_STATUS],
            "failed": self.counts.failed + previous[FAILED_STATUS],
            "drop_reasons": dict(reasons[DROPPED_STATUS] + self.counts.drop_reasons),
            "failure_types": dict(reasons[FAILED_STATUS] + self.counts.failure_types),
        }

    def tokens(self) -> int:
        return sum(usage.prompt_tokens + usage.completion_tokens for usage in self.models.usage.values())

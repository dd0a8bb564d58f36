"""How a run shows its progress on stderr: a live bar in a terminal, a plain heartbeat line every few seconds
anywhere else (a log file, CI, nohup, SLURM, `| tee`), where a bar would print nothing until the end.

Both show the same figures: records settled (of the total, when known), written, dropped by their top
reasons, failed, the rate, an ETA, and under `run --ray` the shards finished.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import ConfigError

if TYPE_CHECKING:
    from .runner import Runner

REFRESH_S = 0.2
HEARTBEAT_S = 10.0
HEARTBEAT_ENV = "SYNTHLOOM_PROGRESS_EVERY"


@dataclass(frozen=True)
class Figures:
    """What the run has done so far (this part of it; `skipped`: settled by earlier parts)."""

    written: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0
    tokens: int = 0
    """Under `run --ray` (a one-process bar asks the runner)."""
    drop_reasons: Mapping[str, int] = field(default_factory=dict)
    shards: tuple[int, int] | None = None
    """(finished, all) under `run --ray`."""
    batches: str | None = None
    """Batch models: the batches pending at the provider, the oldest's age, the calls waiting on them."""
    hung_tools: str | None = None
    """Python tools whose calls outlived their timeout: how many threads they left running."""

    @property
    def settled(self) -> int:
        return self.written + self.failed + self.dropped

    @classmethod
    def of_totals(cls, totals: Mapping[str, Any]) -> Figures:
        """The summed figures `run --ray` reports (see `distributed.run_on_ray`)."""
        failed, dropped = int(totals.get("failed", 0)), int(totals.get("dropped", 0))
        shards = totals.get("shards")
        return cls(written=int(totals.get("done", 0)) - failed - dropped, failed=failed, dropped=dropped,
                   skipped=int(totals.get("skipped", 0)), tokens=int(totals.get("tokens", 0)),
                   drop_reasons=dict(totals.get("drop_reasons") or {}),
                   shards=(int(totals.get("shards_done", 0)), int(shards)) if shards else None)


def top_reasons(reasons: Mapping[str, int], at_most: int = 3) -> str:
    """'keep: too short 4, dedup: duplicate 1': the commonest first, the rest summed as 'other'."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    shown = [f"{reason} {count}" for reason, count in ranked[:at_most]]
    rest = sum(count for _, count in ranked[at_most:])
    return ", ".join(shown + ([f"other {rest}"] if rest else []))


def batch_figures(batches: Mapping[str, Mapping[str, Any]]) -> str | None:
    """'batches 2 pending (oldest 3m10s), 150 calls waiting', over every batch model; None without any."""
    if not batches:
        return None
    pending = sum(int(state.get("pending") or 0) for state in batches.values())
    waiting = sum(int(state.get("waiting_calls") or 0) for state in batches.values())
    ages = [float(state["oldest_pending_s"]) for state in batches.values() if state.get("oldest_pending_s")]
    oldest = f" (oldest {_duration(max(ages))})" if ages else ""
    return f"batches {pending} pending{oldest}, {waiting} calls waiting"


def hung_tool_figures(threads: Mapping[str, Mapping[str, int]]) -> str | None:
    """'tool threads abandoned 3 (kit 2/8 still hung)'; None while no call outlived its timeout."""
    abandoned = sum(figures["abandoned"] for figures in threads.values())
    if not abandoned:
        return None
    hung = ", ".join(f"{entry} {figures['still_hung']}/{figures['threads']} still hung"
                     for entry, figures in threads.items() if figures["abandoned"])
    return f"tool threads abandoned {abandoned} ({hung})"


def heartbeat_interval(option: float | None) -> float:
    """Seconds between heartbeat lines: `--progress-every`, else $SYNTHLOOM_PROGRESS_EVERY, else 10."""
    if option is not None:
        if option <= 0:
            raise ConfigError("--progress-every must be a positive number of seconds")
        return option
    text = os.environ.get(HEARTBEAT_ENV)
    if not text:
        return HEARTBEAT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"${HEARTBEAT_ENV} is '{text}'; give a positive number of seconds (say 10)")
    return seconds


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Display:
    """What both displays share: the figures as the run last reported them, the rate and the ETA."""

    def __init__(self, total: int | None):
        self.total = total
        self.figures = Figures()
        self.started = time.monotonic()

    def update(self, runner: Runner, force: bool = False) -> None:
        """A record settled (the scheduler calls this on its loop): a new snapshot, which the heartbeat's
        thread reads whole; the drop reasons are copied only when a drop changed them."""
        previous, counts = self.figures, runner.counts
        reasons = previous.drop_reasons if counts.dropped == previous.dropped else dict(counts.drop_reasons)
        self.figures = Figures(written=counts.written, failed=counts.failed, dropped=counts.dropped,
                               skipped=counts.skipped, drop_reasons=reasons,
                               batches=batch_figures(runner.models.batches()),
                               hung_tools=hung_tool_figures(runner.ctx.tools.thread_figures()))
        self._show(runner, force)

    def update_totals(self, totals: Mapping[str, Any]) -> None:
        """A `run --ray`: the figures every shard reported, summed (one display for the whole run)."""
        self.figures = Figures.of_totals(totals)
        self._show(None, True)

    def _show(self, runner: Runner | None, force: bool) -> None:
        pass

    def rate(self) -> float:
        return self.figures.settled / max(1e-9, time.monotonic() - self.started)

    def eta(self) -> str | None:
        figures, rate = self.figures, self.rate()
        if self.total is None or rate <= 0:
            return None
        left = max(0, self.total - figures.settled - figures.skipped)
        return _duration(left / rate)

    def detail(self) -> str:
        figures = self.figures
        dropped = f"dropped {figures.dropped}"
        if figures.drop_reasons:
            dropped += f" ({top_reasons(figures.drop_reasons, 2)})"
        batches = f" · {figures.batches}" if figures.batches else ""
        hung = f" · {figures.hung_tools}" if figures.hung_tools else ""
        return f"written {figures.written} · {dropped} · failed {figures.failed}{batches}{hung}"


class LiveProgress(_Display):
    """The live bar, for a terminal."""

    def __init__(self, total: int | None, console: Console | None = None):
        super().__init__(total)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[detail]}"),
                                 TimeElapsedColumn(), console=console or Console(stderr=True),
                                 transient=False)
        self.task = self.progress.add_task("records", total=total, rate="", detail="")
        self._last = 0.0

    def __enter__(self) -> LiveProgress:
        self.started = time.monotonic()  # the rate counts from when the bar appears (after Ray started)
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _show(self, runner: Runner | None, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < REFRESH_S:
            return
        self._last = now
        figures = self.figures
        detail = self.detail()
        if runner is not None:
            concurrency = " ".join(f"{name}:{state['limit']}/{state['ceiling']}"
                                   for name, state in runner.models.concurrency().items() if "limit" in state)
            detail += f" · tokens {runner.tokens():,}" + (f" · conc {concurrency}" if concurrency else "")
        else:
            detail += f" · tokens {figures.tokens:,}"
        if figures.shards:
            detail += f" · shards {figures.shards[0]}/{figures.shards[1]}"
        self.progress.update(self.task, completed=figures.settled + figures.skipped, rate=f"{self.rate():.1f}/s",
                             detail=detail)


class Heartbeat(_Display):
    """A plain line every `every` seconds, from a timer thread: it keeps beating while no record settles
    (a slow model call), so a log shows the run is alive and how far it got."""

    def __init__(self, total: int | None, every: float, stream: IO[str] | None = None):
        super().__init__(total)
        self.every = every
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name="synthloom-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        """The last line has the figures the run ended with; a run refused before it began (an exception
        on its way to a one-line error) gets none."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if kind is None:
            self._print()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            if not self._print():
                return

    def _print(self) -> bool:
        try:
            print(self.line(), file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed pipe: the run goes on without its log
            return False
        return True

    def line(self) -> str:
        figures = self.figures
        of = f"/{self.total}" if self.total is not None else ""
        settled = f"settled {figures.settled + figures.skipped}{of}"
        if figures.skipped:
            settled += f" ({figures.skipped} by earlier parts)"
        parts = [f"progress {_duration(time.monotonic() - self.started)}: {settled}", self.detail(),
                 f"{self.rate():.2f} records/s"]
        eta = self.eta()
        if eta is not None:
            parts.append(f"ETA {eta}")
        if figures.shards:
            parts.append(f"shards {figures.shards[0]}/{figures.shards[1]} finished")
        return " · ".join(parts)


def progress_display(total: int | None, every: float) -> LiveProgress | Heartbeat:
    """The live bar on a terminal, the heartbeat anywhere else."""
    console = Console(stderr=True)
    return LiveProgress(total, console) if console.is_terminal else Heartbeat(total, every)

"""The live progress bar: records done, rate, failures, drops, tokens and each model's concurrency."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from .scheduler import Runner

REFRESH_S = 0.2


class LiveProgress:
    def __init__(self, total: int | None, console: Console | None = None):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[detail]}"),
                                 TimeElapsedColumn(), console=console or Console(stderr=True),
                                 transient=False)
        self.task = self.progress.add_task("records", total=total, rate="", detail="")
        self._last = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> LiveProgress:
        self._started = time.monotonic()  # the rate counts from when the bar appears (after Ray started)
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, runner: Runner, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < REFRESH_S:
            return
        self._last = now
        counts = runner.counts
        done = counts.written + counts.failed + counts.dropped
        rate = done / max(1e-9, now - self._started)
        concurrency = " ".join(f"{name}:{state['limit']}/{state['ceiling']}"
                               for name, state in runner.models.concurrency().items() if "limit" in state)
        detail = (f"failed {counts.failed} · dropped {counts.dropped} · tokens {runner.tokens():,}"
                  + (f" · conc {concurrency}" if concurrency else ""))
        self.progress.update(self.task, completed=done + counts.skipped, rate=f"{rate:.1f}/s", detail=detail)

    def update_totals(self, totals: dict[str, int]) -> None:
        """A `run --ray`: the figures every shard reported, summed (one bar for the whole run)."""
        now = time.monotonic()
        done = totals.get("done", 0)
        rate = done / max(1e-9, now - self._started)
        detail = (f"failed {totals.get('failed', 0)} · dropped {totals.get('dropped', 0)} · "
                  f"tokens {totals.get('tokens', 0):,}")
        self.progress.update(self.task, completed=done + totals.get("skipped", 0), rate=f"{rate:.1f}/s",
                             detail=detail)

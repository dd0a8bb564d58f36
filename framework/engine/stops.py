"""The user's requests to stop a run (Ctrl-C, SIGTERM), counted in one place for both run paths.

The first request drains (no new records; those in flight get `run.drain_seconds`); the second stops now.
They are caught with `signal.signal`, not by the event loop, so a loop that some node keeps busy still
hears them, and no KeyboardInterrupt lands inside a Ray call. What a request does is the run path's: one
process asks its runner to stop (`on_request`), the `run --ray` driver polls `count` between its waits.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from types import TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DRAIN, STOP_NOW = 1, 2
"""What the first and the second request mean."""


class StopRequests:
    """How many times the user asked the run to stop. `with StopRequests(...)` installs the handler for
    SIGINT and SIGTERM and puts the previous handlers back after."""

    def __init__(self, on_request: Callable[[int], None] | None = None):
        self.count = 0
        self.on_request = on_request
        """Called in the signal handler with the count so far (1: drain, 2: stop now)."""
        self._previous = {signum: signal.getsignal(signum) for signum in SIGNALS}

    def request(self) -> None:
        self.count += 1
        if self.on_request is not None:
            self.on_request(self.count)

    def _handle(self, signum: int, frame: object) -> None:
        self.request()

    def __enter__(self) -> StopRequests:
        self._previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        for signum in SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

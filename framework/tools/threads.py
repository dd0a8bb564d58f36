"""The threads sync Python tools run on: a few of their own per `tools:` entry, never the event loop's
default executor.

A thread cannot be killed, so a sync tool that hangs past its timeout keeps its thread for good. On the
default executor (min(32, cpus + 4) threads) that thread is one of the handful that aiohttp's DNS lookups
and every `asyncio.to_thread` of the run share: a few hung calls and the whole run waits behind them. Here
an entry's calls take one of its `threads` slots each; a call past its timeout leaves its thread
*abandoned* (counted; the slot comes back if the call ever returns), and once every slot is held by an
abandoned call the entry's next calls fail at once with what to do, instead of queueing for ever. The
threads are daemon threads, started per call: the process leaves without waiting for a hung one (the
interpreter joins a `ThreadPoolExecutor`'s threads at exit, which a hung call would never let end), and a
thread's start costs tens of microseconds beside a tool call's milliseconds.

A tool that must be stoppable, not merely abandoned, belongs behind an MCP server (`command:`), whose
process the run ends with it."""
from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ToolThreadsHung(Exception):
    """Every thread of an entry is held by a call that outlived its timeout: the model is told so."""


@dataclass
class _Call:
    done: bool = False
    abandoned: bool = False


class ToolThreads:
    """The `size` threads of one python `tools:` entry, and how many of them hung calls hold."""

    def __init__(self, entry: str, size: int, timeout: float):
        self.entry, self.size, self.timeout = entry, size, timeout
        self.running = 0
        """Calls whose thread has not returned, abandoned ones included."""
        self.abandoned = 0
        """Calls still running past their timeout (each holds a slot until it returns, if ever)."""
        self.abandoned_in_run = 0
        """Every call that outlived its timeout, returned since or not: the manifest's figure."""
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def run(self, name: str, function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
        """`function(**arguments)` on one of the entry's threads; waits for a free slot, but not for one
        only a hung call could give back. Cancelling the wait (the toolbox's timeout) abandons the thread."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.abandoned >= self.size:
                    raise ToolThreadsHung(self._hung_message(name))
                if self.running < self.size:
                    self.running += 1
                    break
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            await waiter
        call = _Call()
        settled: asyncio.Future[Any] = loop.create_future()
        context = contextvars.copy_context()
        try:
            threading.Thread(target=self._work, args=(loop, settled, call, context, function, arguments),
                             name=f"synthloom-tool-{self.entry}-{name}", daemon=True).start()
        except RuntimeError:  # the system would start no more threads: the slot was never used
            with self._lock:
                self.running -= 1
            self._wake()
            raise
        try:
            return await settled
        except asyncio.CancelledError:
            with self._lock:
                if not call.done:
                    call.abandoned = True
                    self.abandoned += 1
                    self.abandoned_in_run += 1
            self._wake()  # a waiter may now find every slot hung, and should fail rather than wait
            raise

    def _work(self, loop: asyncio.AbstractEventLoop, settled: asyncio.Future[Any], call: _Call,
              context: contextvars.Context, function: Callable[..., Any], arguments: dict[str, Any]) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = context.run(function, **arguments)
        except Exception as raised:  # the model's to read, on the caller's loop
            error = raised
        except BaseException as raised:  # sys.exit() in a tool ends the call, not the run
            error = RuntimeError(f"the tool raised {type(raised).__name__}: {raised}")
        finally:
            with self._lock:
                call.done = True
                self.running -= 1
                if call.abandoned:
                    self.abandoned -= 1
            self._wake()
        try:
            loop.call_soon_threadsafe(_settle, settled, result, error)
        except RuntimeError:  # the run (and its loop) ended while this call hung: nobody waits for it
            pass

    def _wake(self) -> None:
        """Let every waiting call look again (from any thread; a waiter whose loop closed is gone)."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_release, waiter)
            except RuntimeError:
                pass

    def _hung_message(self, name: str) -> str:
        return (f"{name} not called: all {self.size} threads of tools entry '{self.entry}' are held by calls "
                f"that outlived their {self.timeout:g}s timeout; raise the entry's timeout or threads, make "
                f"the tool async, or fix what hangs")

    def figures(self) -> dict[str, int]:
        """What the manifest and the progress line say of this entry's threads."""
        return {"threads": self.size, "abandoned": self.abandoned_in_run, "still_hung": self.abandoned}


def _settle(settled: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if settled.done():  # the caller stopped waiting (its timeout)
        return
    if error is not None:
        settled.set_exception(error)
    else:
        settled.set_result(result)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

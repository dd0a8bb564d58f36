"""Run one call in a forked child with a hard time limit: a test of a bound fails in seconds when the bound
regresses, instead of hanging until pytest's 300 s timeout (or for ever, if the runaway work is one long C
call such as a huge `**`, which no signal interrupts). Fork, not spawn: the child starts at once with the
test's imports and objects, and reports how much its own resident memory grew."""
from __future__ import annotations

import multiprocessing
import reprlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pytest


@dataclass(frozen=True)
class Outcome:
    raised: tuple[str, ...]  # the names of the exception's classes, its own first; () if the call returned
    message: str  # the exception's text, or the returned value's (shortened) repr
    seconds: float
    grown_kib: int  # the child's peak resident size less its size when it started


def _child(call: Callable[[], Any], results: Connection) -> None:
    with open("/proc/self/statm") as handle:
        start_kib = int(handle.read().split()[1]) * resource.getpagesize() // 1024
    started = time.monotonic()
    try:
        value = call()
        raised: tuple[str, ...] = ()
        message = reprlib.repr(value)  # a short one: a big value's full repr would cost more than the call
    except Exception as error:  # what the parent asserts on
        raised, message = tuple(kind.__name__ for kind in type(error).__mro__), str(error)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results.send(Outcome(raised, message, time.monotonic() - started, peak_kib - start_kib))


def run_in_a_child(call: Callable[[], Any], limit_s: float = 20.0, what: str = "") -> Outcome:
    """What `call()` did in a forked child; the test fails if the child takes longer than `limit_s` or dies."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(call, send), daemon=True)
    child.start()
    send.close()
    if not receive.poll(limit_s):
        child.kill()
        child.join()
        pytest.fail(f"still running after {limit_s:g} s (a bound no longer holds?): {what}"[:2000])
    try:
        outcome: Outcome = receive.recv()
    except EOFError:
        child.join()
        pytest.fail(f"the child died (exit {child.exitcode}) without an answer: {what}"[:2000])
    child.join()
    return outcome

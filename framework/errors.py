"""Exception types whose messages are meant for users, not for debuggers.

A `ConfigError` is a user's mistake in a graph file: the CLI prints its one-line message and exits 2,
never a traceback. Errors raised while a record runs fail that record only (see `scheduler`).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

MESSAGE_LIMIT = 400


def one_line(value: object, limit: int = MESSAGE_LIMIT) -> str:
    """A message for one terminal line: user values may hold newlines or be megabytes long."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the choice closest to a misspelt word, or "" when none is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class SynthloomError(Exception):
    """Base of every error synthloom raises on purpose."""


class ConfigError(SynthloomError):
    """A graph file (or an override) says something we cannot run.

    `where` is "file:line" when known and `key` the dotted key path, so the message points at the spot.
    """

    def __init__(self, message: str, *, where: str | None = None, key: str | None = None):
        message, where, key = one_line(message), where and one_line(where), key and one_line(key, 120)
        self.message, self.where, self.key = message, where, key
        prefix = ": ".join(part for part in (where, key) if part)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RecordError(SynthloomError):
    """A record cannot go on (bad template data, unparsable model reply, ...). Fails that record only."""


class ModelCallError(SynthloomError):
    """An LLM call failed. `retryable` says whether trying again may help (429, 5xx, timeouts);
    `overload` whether the server said it is full (429, timeout), which cuts adaptive concurrency."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None, overload: bool = False):
        super().__init__(message)
        self.retryable, self.status, self.retry_after = retryable, status, retry_after
        self.overload = overload
        self.attempts = 1


class RunAborted(SynthloomError):
    """The run stopped on purpose (failure rate too high); the message says why and what to do."""


class OutputWriteError(SynthloomError):
    """The run's own files cannot be written (a full disk, a read-only directory). The run stops admitting
    records at once and exits 1; `--resume` finishes it once the cause is fixed."""

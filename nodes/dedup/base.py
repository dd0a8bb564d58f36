"""What every dedup index shares: where an indexed text came from, what a match reports, and the
interface the node uses."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Origin:
    """Where an indexed text came from: the run (its output folder) and the record."""

    run: str
    record_id: str


@dataclass(frozen=True)
class Match:
    duplicate_of: str
    similarity: float


class Index(Protocol):
    """A signature made outside the lock (it may be slow), then an atomic look-up-or-add under it, both
    in a worker thread unless the index is `quick`; signatures as text for the resume log; saving to /
    loading from a folder. Entries of `origin` itself never match: that is the record meeting itself
    again (a loop through the node, or a record resumed after Ctrl-C stopped it mid-graph), and dropping
    it would lose it."""

    quick: bool
    """Signing and a look-up cost microseconds: both run on the event loop, since a worker-thread hop
    would cost more than the work and, under the index's lock, hold every other record behind it."""

    def signature(self, text: str) -> Any: ...

    def check_and_add(self, signature: Any, origin: Origin) -> Match | None: ...

    def encode(self, signature: Any) -> str: ...

    def decode(self, encoded: str) -> Any: ...

    def save(self, folder: Path) -> None: ...

    def load(self, folder: Path) -> None: ...


def normalise(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed: what `exact` hashes and `minhash` shingles."""
    return " ".join(WORD.findall(text.lower()))

"""Cross-record state that must see every record of a run, wherever the record runs.

A dedup index (or a novelty pool) is an object with `check_and_add(signature, origin)`: look the
signature up and, if nothing matches, add it, as one step. In one process that step runs under an asyncio
lock (`LocalSharedState`); under `synthloom run --ray` every shard's node talks to one Ray actor holding
the object (`synthloom.distributed.actors.RaySharedState`), so a duplicate planted in two shards is seen as one.
Nodes ask `ctx.shared_index(key, index)` and never know which; signatures are made by the caller (they
may be slow), only the check-and-add is serialised.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable  # RunContext is a dataclass that pydantic may build a validator for (agent tools)
class SharedIndex(Protocol):
    """One run-wide index, local or remote. `local` is this process's copy, for making signatures."""

    local: Any

    async def check_and_add(self, signature: Any, origin: Any) -> Any:
        """The object's own `check_and_add` (a match, or None when added), atomically across the run."""
        ...

    async def check_and_add_many(self, items: list[tuple[Any, Any]]) -> None:
        """Replay what this part of the run had kept before a resume (results ignored)."""
        ...

    async def save(self, folder: Path) -> None:
        """The object's `save(folder)`: the whole run's index, not one shard's."""
        ...


@runtime_checkable
class SharedStateProvider(Protocol):
    async def index(self, key: str, local: Any) -> SharedIndex:
        """The run-wide index under `key`; `local` is the object it starts from if none exists yet."""
        ...


class LocalIndex:
    """The index in this process, guarded by an asyncio lock (the single-process run)."""

    def __init__(self, local: Any):
        self.local = local
        self.lock = asyncio.Lock()

    async def check_and_add(self, signature: Any, origin: Any) -> Any:
        """In a worker thread: a look-up in a big index must not hold the event loop (other records'
        calls time out meanwhile); the lock keeps look-up-and-add one step. An index that says it is
        `quick` is asked on the loop (one step by itself) unless a replay or a save holds the lock."""
        if getattr(self.local, "quick", False) and not self.lock.locked():
            return self.local.check_and_add(signature, origin)
        async with self.lock:
            return await asyncio.to_thread(self.local.check_and_add, signature, origin)

    async def check_and_add_many(self, items: list[tuple[Any, Any]]) -> None:
        async with self.lock:
            await asyncio.to_thread(self._add_all, items)

    def _add_all(self, items: list[tuple[Any, Any]]) -> None:
        for signature, origin in items:
            self.local.check_and_add(signature, origin)

    async def save(self, folder: Path) -> None:
        async with self.lock:
            await asyncio.to_thread(self.local.save, folder)


class LocalSharedState:
    def __init__(self) -> None:
        self._indexes: dict[str, LocalIndex] = {}

    async def index(self, key: str, local: Any) -> SharedIndex:
        if key not in self._indexes:
            self._indexes[key] = LocalIndex(local)
        return self._indexes[key]


class Numbering:
    """Numbers handed out once each, run-wide (a sampler's position in `mode: cover`): as a shared index,
    `check_and_add` gives the next number, so shards under `--ray` never draw the same one. Given a
    number (`signature`, on --resume: the highest an earlier part handed to a finished record), it
    hands out only numbers past it from then on."""

    quick = True  # a counter: asked on the event loop (see LocalIndex)

    def __init__(self) -> None:
        self.next = 0

    def check_and_add(self, signature: int | None = None, origin: Any = None) -> int:
        if signature is not None:
            self.next = max(self.next, signature + 1)
            return signature
        number, self.next = self.next, self.next + 1
        return number

    def save(self, folder: Path) -> None:
        """Nothing to keep between runs."""

"""The Ray actors of one `run --ray`, and the shard-side objects that talk to them.

- `PermitBank` (an async actor) holds each model's budget for the whole run: `max_concurrency` slots and
  the `rpm`/`tpm` buckets. A shard asks it before every model call that the cache does not answer (one
  round trip, a millisecond or so next to calls of a second) and gives the slot back after. A shard that
  starts again after its worker died first returns whatever its dead attempt held (`start_shard`).
- `RunBoard` (a plain actor: one call at a time) holds the run-wide indexes (dedup), so check-and-add is
  atomic across shards, plus each shard's progress figures and the driver's request to stop.

Both are created by the driver and die with it; nothing here imports ray at module level, so the
single-process engine never needs it.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from .models.limits import TokenBucket


class PermitBank:
    def __init__(self, budgets: dict[str, dict[str, float | None]]):
        self.slots = {model: asyncio.Semaphore(int(budget["max_concurrency"] or 1))
                      for model, budget in budgets.items()}
        self.ceilings = {model: int(budget["max_concurrency"] or 1) for model, budget in budgets.items()}
        self.rpm = {model: TokenBucket(float(budget["rpm"])) for model, budget in budgets.items() if budget["rpm"]}
        self.tpm = {model: TokenBucket(float(budget["tpm"])) for model, budget in budgets.items() if budget["tpm"]}
        self.in_use = dict.fromkeys(budgets, 0)
        self.peak = dict.fromkeys(budgets, 0)
        self.attempts: dict[int, str] = {}
        self.held: dict[str, tuple[int, str, str, float]] = {}
        """ticket -> (shard, attempt, model, TPM reserved)"""
        self.abandoned: set[str] = set()

    def start_shard(self, shard: int, attempt: str) -> None:
        """A shard (re)starts: slots its earlier attempt held, in a worker that died, come back."""
        self.attempts[shard] = attempt
        for ticket, (held_shard, held_attempt, _, _) in list(self.held.items()):
            if held_shard == shard and held_attempt != attempt:
                self._give_back(ticket, None)

    async def acquire(self, model: str, shard: int, attempt: str, ticket: str, tokens: int) -> bool:
        if model not in self.slots:
            return True
        if model in self.rpm:
            await self.rpm[model].take(1)
        reserved = await self.tpm[model].take(tokens) if model in self.tpm else 0.0
        await self.slots[model].acquire()
        self.in_use[model] += 1
        self.peak[model] = max(self.peak[model], self.in_use[model])
        self.held[ticket] = (shard, attempt, model, reserved)
        if ticket in self.abandoned or self.attempts.get(shard) != attempt:
            self.abandoned.discard(ticket)  # the caller was cancelled, or its worker died, while it waited
            self._give_back(ticket, None)
            return False
        return True

    def release(self, ticket: str, used_tokens: int | None) -> None:
        if ticket not in self.held:
            self.abandoned.add(ticket)  # cancelled before the slot was granted: give it back on grant
            return
        self._give_back(ticket, used_tokens)

    def _give_back(self, ticket: str, used_tokens: int | None) -> None:
        _, _, model, reserved = self.held.pop(ticket)
        self.in_use[model] -= 1
        self.slots[model].release()
        if model in self.tpm:
            self.tpm[model].refund(reserved - (used_tokens if used_tokens is not None else 0))

    def figures(self) -> dict[str, dict[str, int]]:
        return {model: {"ceiling": self.ceilings[model], "peak": self.peak[model], "in_use": self.in_use[model]}
                for model in self.slots}


class RunBoard:
    def __init__(self) -> None:
        self.indexes: dict[str, Any] = {}
        self.progress: dict[int, dict[str, int]] = {}
        self.stopping = False

    def has_index(self, key: str) -> bool:
        return key in self.indexes

    def create_index(self, key: str, index: Any) -> None:
        self.indexes.setdefault(key, index)  # the first shard's copy wins; the others are the same

    def check_and_add(self, key: str, signature: Any, origin: Any) -> Any:
        return self.indexes[key].check_and_add(signature, origin)

    def check_and_add_many(self, key: str, items: list[tuple[Any, Any]]) -> None:
        for signature, origin in items:
            self.indexes[key].check_and_add(signature, origin)

    def save_index(self, key: str, folder: str) -> None:
        """Every shard's teardown saves; each save holds every shard's entries so far, the last all."""
        self.indexes[key].save(Path(folder))

    def report(self, shard: int, figures: dict[str, int]) -> bool:
        """A shard's progress; the answer says whether the driver asked the run to stop."""
        self.progress[shard] = figures
        return self.stopping

    def progress_of(self) -> dict[int, dict[str, int]]:
        return dict(self.progress)

    def stop(self) -> None:
        self.stopping = True


# -- the shard's side ---------------------------------------------------------------------------------

class RayPermits:
    """`PermitProvider` over the run's `PermitBank`; models the bank does not budget pass straight through."""

    def __init__(self, bank: Any, shard: int, models: set[str]):
        self.bank, self.shard, self.models = bank, shard, models
        self.attempt = uuid.uuid4().hex

    async def start(self) -> None:
        await self.bank.start_shard.remote(self.shard, self.attempt)

    async def acquire(self, model: str, tokens: int) -> Any:
        if model not in self.models:
            return None
        ticket = uuid.uuid4().hex
        try:
            await self.bank.acquire.remote(model, self.shard, self.attempt, ticket, tokens)
        except asyncio.CancelledError:
            self.bank.release.remote(ticket, None)
            raise
        return ticket

    def release(self, model: str, ticket: Any, used_tokens: int | None) -> None:
        if ticket is not None:
            self.bank.release.remote(ticket, used_tokens)


class RayIndex:
    def __init__(self, board: Any, key: str, local: Any):
        self.board, self.key, self.local = board, key, local

    async def check_and_add(self, signature: Any, origin: Any) -> Any:
        return await self.board.check_and_add.remote(self.key, signature, origin)

    async def check_and_add_many(self, items: list[tuple[Any, Any]]) -> None:
        await self.board.check_and_add_many.remote(self.key, items)

    async def save(self, folder: Path) -> None:
        await self.board.save_index.remote(self.key, str(folder))


class RaySharedState:
    """`SharedStateProvider` over the run's `RunBoard`: one index per key for every shard."""

    def __init__(self, board: Any):
        self.board = board

    async def index(self, key: str, local: Any) -> RayIndex:
        if not await self.board.has_index.remote(key):
            await self.board.create_index.remote(key, local)
        return RayIndex(self.board, key, local)

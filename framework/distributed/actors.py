"""The Ray actors of one `run --ray`, and the shard-side objects that talk to them.

- `PermitBank` splits each model's budget (`max_concurrency`, and with it `rpm`/`tpm`) across the running
  shards as leases, rebalanced every ~0.3 s as shards start and finish. A call waits only on its shard's
  local lease: a bank asked per call (tried first) cost ~3 ms of actor round trip per call here and
  slowed a 1-shard run by half against 50 ms calls; leases cost nothing per call.
- `RunBoard` (a plain actor: one call at a time) holds the run-wide indexes (dedup), so check-and-add is
  atomic across shards, plus each shard's progress figures and the driver's request to stop.

Both are created by the driver and die with it; nothing here imports ray at module level, so the
single-process engine never needs it.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ..models.limits import Slots, TokenBucket


class PermitBank:
    """Each model's `max_concurrency` split across the shards that are running, as leases.

    A shard may have at most its lease of calls in flight; the leases never add up to more than the
    ceiling. Every ~0.3 s a shard syncs: it gives back what it holds beyond its target and no longer
    uses, and is granted up to its target from what is free. Targets are the ceiling split evenly over
    the running shards, so when a shard finishes (or starts) the others' leases follow. A shard whose
    worker died is registered again by its retry with nothing held."""

    def __init__(self, budgets: dict[str, dict[str, float | None]]):
        self.ceilings = {model: int(budget["max_concurrency"] or 1) for model, budget in budgets.items()}
        self.granted: dict[int, dict[str, int]] = {}
        self.attempts: dict[int, str] = {}
        self.running: set[int] = set()
        self.peak = dict.fromkeys(budgets, 0)

    def register(self, shard: int, attempt: str) -> None:
        self.attempts[shard] = attempt
        self.granted[shard] = dict.fromkeys(self.ceilings, 0)
        self.running.add(shard)

    def sync(self, shard: int, attempt: str, give_back: dict[str, int]) -> dict[str, tuple[int, int]]:
        """Take back `give_back`, grant up to the target from what is free; returns (granted, target)."""
        if self.attempts.get(shard) != attempt:
            return dict.fromkeys(self.ceilings, (0, 0))  # an attempt that was replaced holds nothing
        mine = self.granted[shard]
        answer: dict[str, tuple[int, int]] = {}
        for model, ceiling in self.ceilings.items():
            mine[model] -= give_back.get(model, 0)
            target = self._target(model, shard)
            free = ceiling - sum(held[model] for held in self.granted.values())
            mine[model] += max(0, min(target - mine[model], free))
            self.peak[model] = max(self.peak[model], sum(held[model] for held in self.granted.values()))
            answer[model] = (mine[model], target)
        return answer

    def _target(self, model: str, shard: int) -> int:
        running = sorted(self.running)
        share, extra = divmod(self.ceilings[model], len(running))
        return share + (1 if running.index(shard) < extra else 0)

    def finish(self, shard: int, attempt: str) -> None:
        if self.attempts.get(shard) == attempt:
            self.running.discard(shard)
            self.granted[shard] = dict.fromkeys(self.ceilings, 0)

    def figures(self) -> dict[str, dict[str, int]]:
        """Per model: the ceiling and the most the leases ever added up to (what the servers could see)."""
        return {model: {"ceiling": ceiling, "peak": self.peak[model]} for model, ceiling in self.ceilings.items()}


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

    def report(self, shard: int, figures: dict[str, Any]) -> bool:
        """A shard's progress; the answer says whether the driver asked the run to stop."""
        self.progress[shard] = figures
        return self.stopping

    def progress_of(self) -> dict[int, dict[str, Any]]:
        return dict(self.progress)

    def stop(self) -> None:
        self.stopping = True


# -- the shard's side ---------------------------------------------------------------------------------

class RayPermits:
    """`PermitProvider` holding this shard's lease of each model's run-wide budget: a call waits on a
    local gate, the limiter's `Slots` sized to the lease (no round trip per call); `sync` trades leases
    with the bank. `rpm`/`tpm` are split in the same proportion as the concurrency (this shard's target
    over the ceiling), and each shard's bucket starts with 1/shards of the run's budget, so the shards'
    first bursts add up to one bucket."""

    def __init__(self, bank: Any, shard: int, budgets: dict[str, dict[str, float | None]], shards: int = 1):
        self.bank, self.shard, self.budgets, self.shards = bank, shard, budgets, max(1, shards)
        self.attempt = uuid.uuid4().hex
        self.gates = {model: Slots(0) for model in budgets}
        self.granted = dict.fromkeys(budgets, 0)
        self.buckets: dict[tuple[str, str], TokenBucket] = {}

    async def start(self) -> None:
        await self.bank.register.remote(self.shard, self.attempt)
        await self.sync()

    async def sync(self) -> None:
        give_back: dict[str, int] = {}
        for model, gate in self.gates.items():
            surplus = self.granted[model] - max(gate.limit, gate.in_use)
            if surplus > 0:
                give_back[model] = surplus
                self.granted[model] -= surplus
        answer = await self.bank.sync.remote(self.shard, self.attempt, give_back)
        for model, (granted, target) in answer.items():
            self.granted[model] = granted
            self.gates[model].resize(min(target, granted))
            self._share_rates(model, target)

    def _share_rates(self, model: str, target: int) -> None:
        ceiling = int(self.budgets[model]["max_concurrency"] or 1)
        for kind in ("rpm", "tpm"):
            total = self.budgets[model].get(kind)
            if not total or target <= 0:
                continue
            per_minute = float(total) * target / ceiling
            bucket = self.buckets.get((model, kind))
            if bucket is None:
                # A shard that starts first is briefly the only one running and leased the whole rate; its
                # opening burst is still its 1/shards part, so the run's bursts add up to one budget.
                bucket = self.buckets[model, kind] = TokenBucket(per_minute)
                bucket.tokens = min(per_minute, float(total) / self.shards)
            else:
                bucket.capacity, bucket.rate = per_minute, per_minute / 60.0
                bucket.tokens = min(bucket.tokens, per_minute)

    async def finish(self) -> None:
        await self.bank.finish.remote(self.shard, self.attempt)

    async def acquire(self, model: str, tokens: int) -> Any:
        gate = self.gates.get(model)
        if gate is None:
            return None  # not a budgeted model (an embedded one lives in this worker)
        await gate.take()
        try:
            if (model, "rpm") in self.buckets:
                await self.buckets[model, "rpm"].take(1)
            reserved = await self.buckets[model, "tpm"].take(tokens) if (model, "tpm") in self.buckets else 0.0
        except BaseException:
            gate.release()
            raise
        return reserved

    def release(self, model: str, ticket: Any, used_tokens: int | None) -> None:
        gate = self.gates.get(model)
        if gate is None:
            return
        gate.release()
        bucket = self.buckets.get((model, "tpm"))
        if bucket is not None and used_tokens is not None:
            bucket.refund(float(ticket) - used_tokens)


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

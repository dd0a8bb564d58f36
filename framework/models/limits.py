"""How fast one model is fed: a concurrency limit that adapts to overload, and RPM/TPM token buckets."""
from __future__ import annotations

import asyncio
import time
from collections import deque


class Slots:
    """At most `limit` holders at once, first come first served; the limit may change while callers wait
    (`resize`). The waiting primitive of the adaptive limiter below and of a `run --ray` shard's lease of a
    run-wide budget (`distributed.actors.RayPermits`): a freed slot is handed to the longest waiter."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # we were handed a slot as we were cancelled: pass it on
            elif waiter in self._waiters:  # `_wake` may already have passed over it
                self._waiters.remove(waiter)
            raise

    def _take(self) -> None:
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)


class AdaptiveLimiter(Slots):
    """At most `limit` calls at once. On overload (429, timeout) the limit drops by a quarter, once per
    burst; after `limit` successes in a row it grows by one, never above `ceiling`.

    "Once per burst": `acquire` hands out the number of cuts made so far; an overload reported by a call
    that started before the latest cut says nothing new (it was sent under the old limit) and is ignored.
    """

    def __init__(self, ceiling: int, adaptive: bool = True):
        super().__init__(ceiling)
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.cuts = 0
        self._successes = 0

    async def acquire(self) -> int:
        await self.take()
        return self.cuts

    def on_success(self) -> None:
        if not self.adaptive or self.limit >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.resize(self.limit + 1)

    def on_overload(self, ticket: int) -> None:
        """`ticket` is what `acquire` returned for the call that met the overload."""
        if not self.adaptive or ticket < self.cuts:
            return
        self._successes = 0
        self.cuts += 1
        self.limit = max(1, self.limit - max(1, self.limit // 4))


class TokenBucket:
    """`per_minute` units refilled continuously; `take` waits until enough are there.
    Reservations are estimates and get corrected with what the server reports (`refund`)."""

    def __init__(self, per_minute: float):
        self.capacity = per_minute
        self.tokens = per_minute
        self.rate = per_minute / 60.0
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, amount: float) -> float:
        amount = min(amount, self.capacity)
        async with self._lock:
            self._refill()
            while self.tokens < amount:
                await asyncio.sleep((amount - self.tokens) / self.rate)
                self._refill()
            self.tokens -= amount
        return amount

    def refund(self, amount: float) -> None:
        """Give back (or, negative, charge) the difference between the estimate and the real use."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens + amount)

"""Spread calls over several servers of the same model: fewest outstanding requests first; a server that
fails several times in a row is benched and probed back in after a pause that grows."""
from __future__ import annotations

import time
from dataclasses import dataclass

FAILURES_TO_BENCH = 3
FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 30.0


@dataclass
class Replica:
    url: str
    outstanding: int = 0
    failures_in_row: int = 0
    benched_until: float = 0.0
    pause: float = FIRST_PAUSE_S
    served: int = 0

    def healthy(self, now: float) -> bool:
        return self.benched_until <= now


class ReplicaSet:
    def __init__(self, urls: list[str]):
        self.replicas = [Replica(url) for url in urls]

    def choose(self) -> Replica:
        now = time.monotonic()
        healthy = [replica for replica in self.replicas if replica.healthy(now)]
        if healthy:
            chosen = min(healthy, key=lambda replica: replica.outstanding)
        else:  # all benched: probe the one that comes back first
            chosen = min(self.replicas, key=lambda replica: replica.benched_until)
        chosen.outstanding += 1
        return chosen

    def done(self, replica: Replica, *, ok: bool, server_fault: bool) -> None:
        replica.outstanding -= 1
        if ok:
            replica.served += 1
            replica.failures_in_row = 0
            replica.pause = FIRST_PAUSE_S
            return
        if not server_fault:
            return
        replica.failures_in_row += 1
        if replica.failures_in_row >= FAILURES_TO_BENCH and len(self.replicas) > 1:
            replica.benched_until = time.monotonic() + replica.pause
            replica.pause = min(LONGEST_PAUSE_S, replica.pause * 2)
            replica.failures_in_row = FAILURES_TO_BENCH - 1  # one more failure after the probe benches it again

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [{"url": r.url, "served": r.served, "healthy": r.healthy(now)} for r in self.replicas]

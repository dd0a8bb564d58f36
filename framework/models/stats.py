"""Counters for the manifest and the progress bar: calls, tokens, retries, latency percentiles, cost.

Latencies go into a fixed-size reservoir so memory stays flat however long the run is.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

RESERVOIR = 4096
BATCH_PRICE_SHARE = 0.5
"""What a batched call costs as a share of the synchronous price, unless `price.batch` says: OpenAI's."""


@dataclass
class LatencyReservoir:
    samples: list[float] = field(default_factory=list)
    seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.samples) < RESERVOIR:
            self.samples.append(value)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < RESERVOIR:
                self.samples[slot] = value

    def percentiles(self) -> dict[str, float | None]:
        if not self.samples:
            return {"p50": None, "p95": None, "p99": None}
        ordered = sorted(self.samples)
        last = len(ordered) - 1
        return {name: round(ordered[min(last, int(q * len(ordered)))], 4)
                for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))}


@dataclass
class UsageStats:
    """Per node or per model: what the LLM calls cost."""

    calls: int = 0
    cached: int = 0
    errors: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    batch_calls: int = 0
    """Calls answered through a provider's Batch API (`cost_usd` includes their cost, `batch_cost_usd`)."""
    batch_cost_usd: float = 0.0
    latency: LatencyReservoir = field(default_factory=LatencyReservoir)

    def record(self, *, prompt_tokens: int, completion_tokens: int, latency: float, attempts: int,
               cached: bool, price: dict[str, float] | None = None, batched: bool = False) -> None:
        """A batched call costs `price.batch` times the price (default BATCH_PRICE_SHARE)."""
        self.calls += 1
        self.batch_calls += int(batched)
        self.cached += int(cached)
        self.retries += max(0, attempts - 1)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if not cached:
            self.latency.add(latency)
        if price and not cached:
            cost = (prompt_tokens * price.get("prompt", 0.0) + completion_tokens * price.get("completion", 0.0)) / 1e6
            if batched:
                cost *= price.get("batch", BATCH_PRICE_SHARE)
                self.batch_cost_usd += cost
            self.cost_usd += cost

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "cached": self.cached, "errors": self.errors, "retries": self.retries,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6), "latency_s": self.latency.percentiles(),
                **({"batch_calls": self.batch_calls, "batch_cost_usd": round(self.batch_cost_usd, 6),
                    "sync_cost_usd": round(self.cost_usd - self.batch_cost_usd, 6)} if self.batch_calls else {})}


@dataclass
class NodeStats:
    steps: int = 0
    failures: int = 0
    drops: int = 0
    seconds: LatencyReservoir = field(default_factory=LatencyReservoir)
    usage: UsageStats = field(default_factory=UsageStats)

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "failures": self.failures, "drops": self.drops,
                "step_seconds": self.seconds.percentiles(), "llm": self.usage.as_dict()}

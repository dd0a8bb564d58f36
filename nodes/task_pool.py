"""Cross-record nodes over a run-wide pool (`ctx.pool`): `novelty` admits an item only if it differs
enough from everything admitted so far (Self-Instruct's ROUGE-L < 0.7 rule), and `pool_sample` draws
examples from the pool into a record's prompt (Self-Instruct shows 6 human + 2 generated tasks)."""
from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field
from synthloom.context import RunContext
from synthloom.errors import ConfigError
from synthloom.node import Drop, Node, NodeParams


class PreloadSpec(NodeParams):
    file: str = Field(description="a .jsonl file (relative to the graph file) of items the pool starts with")
    field: str = Field(description="the key of each line holding the text")


async def _preload(ctx: RunContext, pool_name: str, preload: PreloadSpec | None, max_size: int) -> None:
    """Fill a pool from its seed file once per run, whichever node sets it up first."""
    pool = ctx.pool(pool_name, max_size)
    if preload is None or pool.preloaded:
        return
    path = ctx.resolve_path(preload.file)
    if not path.exists():
        raise ConfigError(f"pool preload file {path} does not exist")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pool.preload({"text": row[preload.field], **row} for row in rows if row.get(preload.field))
    if ctx.has_shared_index(f"novelty:{pool_name}"):  # a novelty node was set up first: it learns them too
        await (await ctx.shared_index(f"novelty:{pool_name}")).check_and_add_many(
            [((str(item["text"]), None), None) for item in pool.items if item.get("record") is None])


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(candidate: str, reference: str) -> float:
    return float(_rouge_scorer().score(reference, candidate)["rougeL"].fmeasure)


class NoveltyParams(NodeParams):
    field: str = Field(description="the state key holding the new item's text")
    pool: str = Field(description="the pool's name (shared by every node naming it)")
    method: Literal["rouge_l"] = Field(default="rouge_l", description="similarity measure")
    threshold: float = Field(default=0.7, gt=0, le=1, description="drop when similarity to any pooled item "
                                                                  "reaches this (Self-Instruct: 0.7)")
    max_size: int = Field(default=100_000, ge=1, description="oldest items leave a full pool")
    preload: PreloadSpec | None = Field(default=None, description="items the pool starts with")
    keep: list[str] = Field(default_factory=list, description="other state keys stored with the item")
    output: str | None = Field(default=None, description="state key for {max_similarity, most_similar}")


class Novelty(Node):
    """Admit the record's text to a pool only if no pooled text is as similar as `threshold`; else drop.
    Check-and-add happens under the pool's lock, so two similar texts arriving together cannot both pass."""

    Params = NoveltyParams

    def reads(self) -> set[str]:
        return {self.params.field, *self.params.keep}

    def writes(self) -> set[str]:
        return {self.params.output} if self.params.output else set()

    async def setup(self, ctx: RunContext) -> None:
        await _preload(ctx, self.params.pool, self.params.preload, self.params.max_size)
        await _novelty_index(ctx, self.params.pool, ctx.pool(self.params.pool, self.params.max_size))

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any] | Drop:
        p = self.params
        text = str(state[p.field])
        pool = ctx.pool(p.pool, p.max_size)
        store = await _novelty_index(ctx, p.pool, pool)  # run-wide: every shard's pool under --ray
        best, closest, novel = await store.check_and_add((text, p.threshold), state["id"])
        if not novel:
            return Drop("not novel", {"similarity": round(best, 3), "similar_to": closest[:200] if closest else None})
        pool.add(state["id"], {"text": text, **{key: state.get(key) for key in p.keep}})
        if p.output:
            return {p.output: {"max_similarity": round(best, 3), "most_similar": closest}}
        return {}


class RougeNoveltyIndex:
    """The pool's texts as one shared index (`ctx.shared_index`): compare with every text and add if novel,
    in one step, so two similar texts arriving together (in any shard) cannot both pass."""

    def __init__(self, items: Iterable[dict[str, Any]], max_size: int):
        self.items: deque[tuple[str, Any]] = deque(maxlen=max_size)
        self.seen: set[tuple[str, Any]] = set()
        self.check_and_add_many([((str(item["text"]), None), item.get("record")) for item in items])

    def check_and_add(self, signature: tuple[str, float | None], record: Any) -> tuple[float, str | None, bool]:
        """(best similarity, closest text, admitted); a threshold of None restores an item unchecked."""
        text, threshold = signature
        best, closest = 0.0, None
        for pooled, origin in self.items if threshold is not None else ():
            if origin == record and record is not None:
                continue  # the record meeting itself again (a loop through this node)
            score = rouge_l(text, pooled)
            if score > best:
                best, closest = score, pooled
        novel = threshold is None or best < threshold
        if novel and (text, record) not in self.seen:
            self.items.append((text, record))
            self.seen.add((text, record))
        return best, closest, novel

    def check_and_add_many(self, items: list[tuple[tuple[str, float | None], Any]]) -> None:
        for signature, record in items:
            self.check_and_add(signature, record)

    def save(self, folder: Any) -> None:
        """Persisted by the pool file (pools/), not here."""


async def _novelty_index(ctx: RunContext, name: str, pool: Any) -> Any:
    """Made in the node's setup from the pool's items (preloaded, and on --resume those of finished
    records); a shard joining a run-wide index adds the items its own pool holds."""
    key = f"novelty:{name}"
    if ctx.has_shared_index(key):
        return await ctx.shared_index(key)
    store = await ctx.shared_index(key, RougeNoveltyIndex(pool.items, pool.max_size))
    await store.check_and_add_many([((str(item["text"]), None), item.get("record")) for item in pool.items])
    return store


class PoolSampleParams(NodeParams):
    pool: str = Field(description="the pool's name")
    k_seed: int = Field(default=6, ge=0, description="items drawn from the preloaded (human) part")
    k_generated: int = Field(default=2, ge=0, description="items drawn from those records added")
    seed: int = 0
    output: str = Field(default="examples", description="state key for the list of drawn items")
    max_size: int = 100_000
    preload: PreloadSpec | None = None


class PoolSample(Node):
    """Draw examples from a pool into the record (seeded by record id), e.g. for an instruction prompt."""

    Params = PoolSampleParams

    def writes(self) -> set[str]:
        return {self.params.output}

    async def setup(self, ctx: RunContext) -> None:
        await _preload(ctx, self.params.pool, self.params.preload, self.params.max_size)

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        p = self.params
        pool = ctx.pool(p.pool, p.max_size)
        rng = random.Random(f"{p.seed}:{state['id']}")
        async with pool.lock:
            drawn = pool.sample(p.k_seed, rng, generated=False) + pool.sample(p.k_generated, rng, generated=True)
        rng.shuffle(drawn)
        return {p.output: [{key: value for key, value in item.items() if key != "record"} for item in drawn]}

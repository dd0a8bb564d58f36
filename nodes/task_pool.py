"""Cross-record nodes over a run-wide pool (`ctx.record_pool`): `novelty` admits an item only if it differs
enough from everything admitted so far (Self-Instruct's ROUGE-L < 0.7 rule), and `pool_sample` draws
examples from the pool into a record's prompt (Self-Instruct shows 6 human + 2 generated tasks).

`novelty` finds the most similar pooled text through a `RougeIndex` (rouge_index.py: exact, without
scoring the whole pool) in a worker thread, holding the pool's lock across the check and the add, so the
event loop keeps serving other records' HTTP calls while it runs and two similar texts cannot both pass."""
from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from synthloom.config import ceilings
from synthloom.graph.context import RunContext
from synthloom.graph.node import Drop, Node, NodeParams
from synthloom.graph.record_pool import RecordPool
from synthloom.graph.shared_state import LocalSharedState
from synthloom.sandbox.run_paths import plain_name

from .rouge_index import Closest, RougeIndex, tokenize


class PreloadSpec(NodeParams):
    file: str = Field(description="a .jsonl file (relative to the graph file) of items the pool starts with")
    field: str = Field(description="the key of each line holding the text")


async def _preload(ctx: RunContext, pool_name: str, preload: PreloadSpec | None, max_size: int,
                   key: str) -> None:
    """Fill a pool from its seed file once per run, whichever node sets it up first."""
    pool = ctx.record_pool(pool_name, max_size)
    if preload is None or pool.preloaded:
        return
    _, text = ctx.read_file(preload.file, key, "pool preload file ")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    pool.preload({"text": row[preload.field], **row} for row in rows if row.get(preload.field))
    if ctx.has_shared_index(f"novelty:{pool_name}"):  # a novelty node was set up first: it learns them too
        await (await ctx.shared_index(f"novelty:{pool_name}")).check_and_add_many(
            [((str(item["text"]), None), None) for item in pool.items if item.get("record") is None])


PoolName = Annotated[str, AfterValidator(lambda name: plain_name(name, "a pool name"))]
"""A pool's name names its file, <run dir>/pools/<name>.jsonl: a plain name, never a path."""


class NoveltyParams(NodeParams):
    field: str = Field(description="the state key holding the new item's text")
    pool: PoolName = Field(description="the pool's name (shared by every node naming it)")
    method: Literal["rouge_l"] = Field(default="rouge_l", description="similarity measure")
    threshold: float = Field(default=0.7, gt=0, le=1, description="drop when similarity to any pooled item "
                                                                  "reaches this (Self-Instruct: 0.7)")
    max_size: int = Field(default=100_000, ge=1, le=ceilings.MAX_POOL_SIZE,
                          description="oldest items leave a full pool")
    preload: PreloadSpec | None = Field(default=None, description="items the pool starts with")
    keep: list[str] = Field(default_factory=list, description="other state keys stored with the item")
    output: str | None = Field(default=None, description="state key for {max_similarity, most_similar}")


class Novelty(Node[NoveltyParams]):
    """Admit the record's text to a pool only if no pooled text is as similar as `threshold`; else drop.
    Check-and-add happens under the pool's lock, so two similar texts arriving together cannot both pass."""


    def reads(self) -> set[str]:
        return {self.params.field, *self.params.keep}

    def writes(self) -> set[str]:
        return {self.params.output} if self.params.output else set()

    async def setup(self, ctx: RunContext) -> None:
        await _preload(ctx, self.params.pool, self.params.preload, self.params.max_size,
                       f"nodes.{self.name}.preload.file")
        if _run_wide(ctx):
            await _novelty_index(ctx, self.params.pool, ctx.record_pool(self.params.pool, self.params.max_size))
        await asyncio.to_thread(tokenize, "")  # imports rouge-score (and nltk) now, before records are in flight

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any] | Drop:
        p = self.params
        text = str(state[p.field])
        pool = ctx.record_pool(p.pool, p.max_size)
        if _run_wide(ctx):
            return await self._run_wide_check(ctx, pool, text, state)
        index: RougeIndex = ctx.shared(f"novelty-index:{p.pool}", RougeIndex).value
        async with pool.lock:
            # the record's own earlier entry is not a rival: it is the record meeting itself again (a loop)
            closest = await asyncio.to_thread(_closest, index, pool, text, state["id"])
            if closest.score >= p.threshold:
                return Drop("not novel", {"similarity": round(closest.score, 3),
                                          "similar_to": closest.text[:200] if closest.text else None})
            pool.add(state["id"], {"text": text, **{key: state.get(key) for key in p.keep}})
        if p.output:
            return {p.output: {"max_similarity": round(closest.score, 3), "most_similar": closest.text}}
        return {}

    async def _run_wide_check(self, ctx: RunContext, pool: RecordPool, text: str,
                              state: Mapping[str, Any]) -> dict[str, Any] | Drop:
        """Under `run --ray`: one index for every shard (a Ray actor), so two similar texts in two shards
        cannot both pass."""
        p = self.params
        store = await _novelty_index(ctx, p.pool, pool)
        best, closest, novel = await store.check_and_add((text, p.threshold), state["id"])
        if not novel:
            return Drop("not novel", {"similarity": round(best, 3), "similar_to": closest[:200] if closest else None})
        pool.add(state["id"], {"text": text, **{key: state.get(key) for key in p.keep}})
        if p.output:
            return {p.output: {"max_similarity": round(best, 3), "most_similar": closest}}
        return {}


def _closest(index: RougeIndex, pool: RecordPool, text: str, record_id: str) -> Closest:
    index.follow(pool)
    return index.closest(text, exclude_record=record_id)


class RougeNoveltyIndex:
    """The pool's texts as one shared index (`ctx.shared_index`, a Ray actor under `run --ray`): find the
    closest text through a `RougeIndex` and add if novel, in one step."""

    def __init__(self, items: Iterable[dict[str, Any]], max_size: int):
        self.index = RougeIndex()
        self.seen: set[tuple[str, Any]] = set()
        self.check_and_add_many([((str(item["text"]), None), item.get("record")) for item in items])

    def check_and_add(self, signature: tuple[str, float | None], record: Any) -> tuple[float, str | None, bool]:
        """(best similarity, closest text, admitted); a threshold of None restores an item unchecked."""
        text, threshold = signature
        closest = self.index.closest(text, exclude_record=record) if threshold is not None else None
        best = closest.score if closest is not None else 0.0
        novel = threshold is None or best < threshold
        if novel and (text, record) not in self.seen:
            self.index.add(text, record)
            self.seen.add((text, record))
        return best, closest.text if closest is not None else None, novel

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


def _run_wide(ctx: RunContext) -> bool:
    """True under `run --ray`, where the pool's index must be one for every shard."""
    return not isinstance(ctx.shared_state, LocalSharedState)


class PoolSampleParams(NodeParams):
    pool: PoolName = Field(description="the pool's name")
    k_seed: int = Field(default=6, ge=0, le=ceilings.MAX_DRAW,
                        description="items drawn from the preloaded (human) part")
    k_generated: int = Field(default=2, ge=0, le=ceilings.MAX_DRAW, description="items drawn from those records added")
    seed: ceilings.Seed = 0
    output: str = Field(default="examples", description="state key for the list of drawn items")
    max_size: int = Field(default=100_000, ge=1, le=ceilings.MAX_POOL_SIZE)
    preload: PreloadSpec | None = None


class PoolSample(Node[PoolSampleParams]):
    """Draw examples from a pool into the record (seeded by record id), e.g. for an instruction prompt."""


    def writes(self) -> set[str]:
        return {self.params.output}

    async def setup(self, ctx: RunContext) -> None:
        await _preload(ctx, self.params.pool, self.params.preload, self.params.max_size,
                       f"nodes.{self.name}.preload.file")

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        p = self.params
        pool = ctx.record_pool(p.pool, p.max_size)
        rng = random.Random(f"{p.seed}:{state['id']}")
        async with pool.lock:
            drawn = pool.sample(p.k_seed, rng, generated=False) + pool.sample(p.k_generated, rng, generated=True)
        rng.shuffle(drawn)
        return {p.output: [{key: value for key, value in item.items() if key != "record"} for item in drawn]}

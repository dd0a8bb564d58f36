"""Glue for the retrieval-augmented synthesis workflow (SynthesizRR, Divekar & Durrett 2024; CRAFT):
retrieve, for each labelled seed example, documents from a local folder whose similarity to it lies in a
band, and check that a rewrite copies neither its source document nor its in-context example.

Similarity is the cosine of sentence embeddings (all-MiniLM-L6-v2, the `embed` extra, loaded offline the
way the `dedup` node loads it) when that extra is installed, else the cosine of TF-IDF vectors computed
here in plain Python. The two scales differ, so each method has its own band:

- embedding: [0.4, 0.9], SynthesizRR's band. Below 0.4 a document is off-topic; above 0.9 it is close to
  a copy of the seed, and rewriting it would add nothing new.
- tfidf: [0.15, 0.8]. TF-IDF counts only the words two texts share exactly, so texts on one topic in other
  words score far lower than with embeddings. On the shipped data (news seeds of ~40 words against
  ~250-word documents) the document on a seed's own topic scores 0.15-0.45 for 11 of 13 seeds (the
  other two: 0.09 and 0.147) and the other documents at most 0.13, where embeddings give 0.35-0.7 and at
  most 0.25: 0.15 keeps off-topic documents out at the cost of a few on-topic ones. At the top, the
  first 150 words of a document score 0.82-0.91 against the whole of it with TF-IDF and 0.92-0.98 with
  embeddings: 0.8 marks a near-copy as 0.9 does for embeddings. Retune the bands for other lengths.

The index is built once per run, in the retrieval node's setup, and shared through the run context with
the copy check.
"""
from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from synthloom.config.ceilings import MAX_DRAW
from synthloom.errors import ConfigError, RecordError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Drop, Node, NodeParams, node
from synthloom.sandbox.files import MAX_FILE_BYTES, checked_path, read_graph_text

Method = Literal["embedding", "tfidf"]
BANDS: dict[str, tuple[float, float]] = {"embedding": (0.4, 0.9), "tfidf": (0.15, 0.8)}
SHARED_KEY = "rag_synth.index"
MAX_DOCUMENT_BYTES = 1_000_000
"""One document (the shipped ones are ~2 KB; a document is rewritten whole in a prompt)."""
TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a about after all also an and any are as at be been before being but by can could did do does each "
    "for from had has have he her his how if in into is it its more most much no not of on once one only "
    "or other our out over per so some such than that the their them then there these they this those "
    "through to too under up very was we were what when where which while who why will with would you "
    "your".split())


def words(text: str) -> list[str]:
    """Lowercased words and numbers, without common function words: what TF-IDF counts."""
    return [word for word in TOKEN.findall(text.lower()) if word not in STOPWORDS]


class Tfidf:
    """TF-IDF over a fixed corpus (raw counts times smoothed IDF, ln((1 + n) / (1 + df)) + 1, as
    scikit-learn's default), L2-normalised; words the corpus never uses are left out of a query."""

    def __init__(self, texts: Sequence[str]):
        counts = [Counter(words(text)) for text in texts]
        frequency = Counter(word for count in counts for word in count)
        self.idf = {word: math.log((1 + len(texts)) / (1 + df)) + 1 for word, df in frequency.items()}
        self.documents = [self._weights(count) for count in counts]

    def _weights(self, count: Counter[str]) -> dict[str, float]:
        weights = {word: tf * self.idf[word] for word, tf in count.items() if word in self.idf}
        norm = math.sqrt(sum(value * value for value in weights.values()))
        return {word: value / norm for word, value in weights.items()} if norm else {}

    def vector(self, text: str) -> dict[str, float]:
        return self._weights(Counter(words(text)))

    @staticmethod
    def cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
        if len(a) > len(b):
            a, b = b, a
        return sum(value * b.get(word, 0.0) for word, value in a.items())


@dataclass
class Document:
    name: str
    title: str
    text: str


@dataclass
class DocumentIndex:
    """The documents of a folder and the similarity of any text to each of them."""

    method: Method
    documents: list[Document]
    tfidf: Tfidf | None = None
    vectors: np.ndarray | None = None
    encoder: Any = field(default=None, repr=False)

    @classmethod
    def build(cls, documents: list[Document], method: Literal["auto", "embedding", "tfidf"]) -> DocumentIndex:
        encoder = None
        if method != "tfidf":
            try:
                from synthloom_nodes.dedup import sentence_encoder
                encoder = sentence_encoder()
            except ConfigError:
                if method == "embedding":
                    raise
        if encoder is None:
            return cls("tfidf", documents, tfidf=Tfidf([doc.text for doc in documents]))
        index = cls("embedding", documents, encoder=encoder)
        index.vectors = index._encode([doc.text for doc in documents])
        return index

    def _encode(self, texts: list[str]) -> np.ndarray:
        from synthloom_nodes.dedup import ENCODER_LOCK
        with ENCODER_LOCK:  # the tokenizer is not thread-safe
            vectors = self.encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    def similarities(self, text: str) -> list[float]:
        """The similarity of `text` to each document, in the documents' order."""
        if self.tfidf is not None:
            query = self.tfidf.vector(text)
            return [round(Tfidf.cosine(query, doc), 4) for doc in self.tfidf.documents]
        assert self.vectors is not None
        return [round(float(value), 4) for value in self.vectors @ self._encode([text])[0]]

    def similarity(self, a: str, b: str) -> float:
        """The similarity of two texts, on the same scale as `similarities`."""
        if self.tfidf is not None:
            return round(Tfidf.cosine(self.tfidf.vector(a), self.tfidf.vector(b)), 4)
        first, second = self._encode([a, b])
        return round(float(first @ second), 4)


def read_documents(folder: str, ctx: RunContext, key: str) -> list[Document]:
    """The folder's .txt documents, read through the one reader (synthloom.sandbox.files): the folder lies
    beside the graph or in a folder the user allowed, each document is a regular file of at most
    MAX_DOCUMENT_BYTES, and all of them together at most MAX_FILE_BYTES (the index holds them all)."""
    resolved = checked_path(ctx.resolve_path(folder), ctx.base_dir, key, what="documents folder ",
                            granted=ctx.read_folders)
    paths = sorted(resolved.glob("*.txt")) if resolved.is_dir() else []
    if not paths:
        raise ConfigError(f"no .txt documents in {resolved}", key=key)
    documents, total = [], 0
    for path in paths:
        text = read_graph_text(path, ctx.base_dir, key, limit=MAX_DOCUMENT_BYTES, what="document ",
                               granted=ctx.read_folders).strip()
        total += len(text)
        if total > MAX_FILE_BYTES:
            raise ConfigError(f"the documents in {resolved} hold more than {MAX_FILE_BYTES // 1_000_000} MB, "
                              f"the most one index holds; use fewer or shorter documents", key=key)
        documents.append(Document(path.stem, text.split("\n", 1)[0].strip(), text))
    return documents


async def run_index(ctx: RunContext, documents: Callable[[], list[Document]] | None = None,
                    method: Literal["auto", "embedding", "tfidf"] = "auto") -> DocumentIndex:
    """The run's document index: built (in a worker thread) by the first caller that gives its documents."""
    shared = ctx.shared(SHARED_KEY, lambda: None)
    async with shared.lock:
        if shared.value is None:
            if documents is None:
                raise RecordError("no document index in this run: a retrieve node must come first")
            shared.value = await asyncio.to_thread(lambda: DocumentIndex.build(documents(), method))
        index: DocumentIndex = shared.value
        return index


class RetrieveParams(NodeParams):
    query: str = Field(default="text", description="state key holding the query text (the seed example)")
    documents: str = Field(default="data/documents", description="folder of .txt documents (first line: "
                           "title), relative to the graph file")
    method: Literal["auto", "embedding", "tfidf"] = Field(
        default="auto", description="auto: embeddings when the embed extra is installed, else TF-IDF")
    embedding_band: tuple[float, float] = Field(default=BANDS["embedding"], description="[low, high] "
                                                "cosine of embeddings a used document lies in")
    tfidf_band: tuple[float, float] = Field(default=BANDS["tfidf"], description="[low, high] TF-IDF cosine "
                                            "a used document lies in")
    top_k: int = Field(default=3, ge=1, le=MAX_DRAW, description="in-band documents listed in `retrieved` "
                       "(the first, the most similar, is the one rewritten)")
    output: str = Field(default="document", description="state key for the chosen {name, title, text, "
                        "similarity}; `retrieved` lists the in-band hits, `retrieval` the method and band")

    @model_validator(mode="after")
    def _ordered(self) -> RetrieveParams:
        for name in ("embedding_band", "tfidf_band"):
            low, high = getattr(self, name)
            if not 0 <= low < high <= 1:
                raise ValueError(f"{name} is [low, high] with 0 <= low < high <= 1")
        return self


class Retrieve(Node[RetrieveParams]):
    """Retrieve the documents of a folder whose similarity to the seed lies in a band (SynthesizRR);
    drop the record when none does."""

    def __init__(self, name: str, params: RetrieveParams):
        super().__init__(name, params)
        self.index: DocumentIndex | None = None

    def reads(self) -> set[str]:
        return {self.params.query}

    def writes(self) -> set[str]:
        return {self.params.output, "retrieved", "retrieval"}

    async def setup(self, ctx: RunContext) -> None:
        key = f"nodes.{self.name}.documents"
        self.index = await run_index(ctx, lambda: read_documents(self.params.documents, ctx, key), self.params.method)

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any] | Drop:
        index = self.index
        assert index is not None, "setup() builds the index"
        query = state[self.params.query]
        if not isinstance(query, str) or not query.strip():
            raise RecordError(f"'{self.params.query}' should be a non-empty text to retrieve with")
        similarities = await asyncio.to_thread(index.similarities, query)
        low, high = self.params.embedding_band if index.method == "embedding" else self.params.tfidf_band
        ranked = sorted(zip(similarities, index.documents, strict=True), key=lambda pair: -pair[0])
        in_band = [(score, doc) for score, doc in ranked if low <= score <= high]
        retrieval = {"method": index.method, "band": [low, high]}
        if not in_band:
            nearest_score, nearest = ranked[0]
            why = "only near-copies of the seed" if nearest_score > high else "none similar enough"
            return Drop(f"no document in the similarity band ({why})",
                        {**retrieval, "nearest": nearest.name, "similarity": nearest_score})
        best_score, best = in_band[0]
        return {self.params.output: {"name": best.name, "title": best.title, "text": best.text,
                                "similarity": best_score},
                "retrieved": [{"name": doc.name, "similarity": score} for score, doc in in_band[:self.params.top_k]],
                "retrieval": retrieval}


PREAMBLE = re.compile(r"^[^\n]{0,80}:\s*\n+")
QUOTES = "\"'“”"


@node(writes=["example"])
def strip_preamble(example: str) -> dict[str, str]:
    """Take off a chat model's lead-in line ("Here is the news story:") and quotes around the story."""
    text = example.strip()
    found = PREAMBLE.match(text)
    if found and text[found.end():].strip():
        text = text[found.end():].strip()
    if len(text) > 1 and text[0] in QUOTES and text[-1] in QUOTES:
        text = text[1:-1].strip()
    return {"example": text}


class CopyCheckParams(NodeParams):
    field: str = Field(description="state key holding the generated text")
    source: str = Field(default="document", description="state key of the retrieved {text, ...} it was "
                        "rewritten from")
    example: str = Field(default="text", description="state key of the in-context example it was shown")
    max_similarity: float | None = Field(default=None, gt=0, le=1, description="drop at or above this "
                                         "similarity to the source or the example (default: the upper edge "
                                         "of the method's band, 0.9 embedding, 0.8 tfidf)")
    output: str = Field(default="copy_check", description="state key for {source, example} similarities")


class CopyCheck(Node[CopyCheckParams]):
    """Drop a rewrite that is a near-copy of its source document or of its in-context example."""

    def reads(self) -> set[str]:
        return {self.params.field, self.params.source, self.params.example}

    def writes(self) -> set[str]:
        return {self.params.output}

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any] | Drop:
        index = await run_index(ctx)
        text, source = state[self.params.field], state[self.params.source]
        if not isinstance(source, Mapping) or "text" not in source:
            raise RecordError(f"'{self.params.source}' should be a retrieved document with a text")
        scores = {"source": await asyncio.to_thread(index.similarity, text, source["text"]),
                  "example": await asyncio.to_thread(index.similarity, text, state[self.params.example])}
        limit = self.params.max_similarity if self.params.max_similarity is not None else BANDS[index.method][1]
        for what, score in scores.items():
            if score >= limit:
                return Drop(f"copies its {'source document' if what == 'source' else 'in-context example'}",
                            {"method": index.method, "similarity": score, "limit": limit})
        return {self.params.output: scores}

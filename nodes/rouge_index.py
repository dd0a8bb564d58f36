"""The most ROUGE-L-similar pooled text without scoring the whole pool: what `novelty` asks of every check.

ROUGE-L's F-measure is 2*LCS/(m+n) over rouge-score's tokens, and the longest common subsequence of two
token lists is never longer than their multiset overlap. So an inverted index of (token, occurrence)
features gives, in one numpy `bincount` over the query's posting lists, an upper bound 2*overlap/(m+n) on
every pooled text's score. Texts are then scored best bound first, in blocks, until the next bound falls
below the best score found (branch and bound): the result is the exact maximum, found among a few dozen
texts instead of 100,000. The scoring is a bit-parallel LCS (Hyyrö 2004) run over a block of texts at once
in numpy, equal to rouge-score's dynamic programme (tests/test_novelty_index.py checks both); the winner
is scored again by rouge-score itself, so the number a record carries is rouge-score's.

Ties keep the earliest pooled text, as the exhaustive loop (strict `>`, oldest first) did. Texts leave
the index oldest first as their pool drops them; the arrays are rebuilt once the dead part outgrows the
live one, so memory follows the pool, not the run.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from synthloom.graph.record_pool import RecordPool

BLOCK = 256  # texts scored at once; small enough that the first block usually settles the search
MASK_BITS = 64  # a query of up to 64 tokens fits one uint64 per text; longer ones are scored one by one
OCCURRENCES = 1 << 20  # a feature is token id * OCCURRENCES + occurrence (texts have fewer repeats)
TOLERANCE = 1e-9  # the bound and the score are both floats of one integer ratio; never prune on a rounding


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def tokenize(text: str) -> list[str]:
    """rouge-score's own tokens (lower-cased ASCII letters and digits), so the index scores what it scores."""
    return list(_scorer()._tokenizer.tokenize(text))


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure of `candidate` against `reference`, computed by rouge-score."""
    return float(_scorer().score(reference, candidate)["rougeL"].fmeasure)


def f_measure(lcs: np.ndarray, candidate_length: int, reference_lengths: np.ndarray) -> np.ndarray:
    """rouge-score's F from an LCS length, in its own operation order, so floats match bit for bit."""
    precision = lcs / candidate_length
    recall = lcs / reference_lengths
    total = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)


@dataclass(frozen=True)
class Closest:
    score: float
    slot: int | None  # None: no pooled text shares a token with the query
    text: str | None


class RougeIndex:
    """Texts by slot (0, 1, 2, ... in pool order), the record each came from, and their token lists."""

    def __init__(self, rebuild_after: int = 1024) -> None:
        self.vocabulary: dict[str, int] = {}
        self.rebuild_after = rebuild_after  # dropped texts kept in the arrays before they may be rebuilt
        self._start_at(0)

    def _start_at(self, slot: int) -> None:
        """Empty arrays whose first text will have slot number `slot`."""
        self.first_slot = slot
        self._evicted = 0  # how many texts at the start of the arrays the pool has dropped
        self.postings: dict[int, array[int]] = {}  # feature (token id, occurrence) -> local positions
        self.token_ids = array("i")  # every text's token ids, one after another
        self.starts = array("q", [0])  # text k's tokens are token_ids[starts[k]:starts[k+1]]
        self.texts: list[str] = []
        self.records: list[str | None] = []

    def __len__(self) -> int:
        return len(self.texts) - self._evicted

    @property
    def next_slot(self) -> int:
        return self.first_slot + len(self.texts)

    def add(self, text: str, record: str | None) -> None:
        ids = [self.vocabulary.setdefault(token, len(self.vocabulary)) for token in tokenize(text)]
        position = len(self.texts)
        for feature in _features(ids):
            postings = self.postings.get(feature)
            if postings is None:
                postings = self.postings[feature] = array("i")
            postings.append(position)
        self.token_ids.extend(ids)
        self.starts.append(len(self.token_ids))
        self.texts.append(text)
        self.records.append(record)

    def follow(self, pool: RecordPool) -> None:
        """Catch up with `pool`: index what it appended since the last call, forget what it dropped."""
        missed = pool.appended - self.next_slot
        if missed > len(pool.items):  # some came and went unseen: start again from what is there
            self._start_at(pool.appended - len(pool.items))
            missed = len(pool.items)
        for item in pool.newest(missed) if missed > 0 else ():
            self.add(str(item["text"]), item.get("record"))
        self.evict_before(pool.appended - len(pool.items))

    def evict_before(self, slot: int) -> None:
        """Forget texts older than `slot` (the pool dropped them); rebuild once most of the arrays are dead."""
        self._evicted = max(self._evicted, min(slot - self.first_slot, len(self.texts)))
        if self._evicted > self.rebuild_after and self._evicted > len(self.texts) - self._evicted:
            self._rebuild()

    def _rebuild(self) -> None:
        keep = range(self._evicted, len(self.texts))
        texts, records = self.texts, self.records
        token_ids, starts = self.token_ids, self.starts
        self._start_at(self.first_slot + self._evicted)
        for position in keep:
            ids = token_ids[starts[position]:starts[position + 1]]
            for feature in _features(ids):
                self.postings.setdefault(feature, array("i")).append(len(self.texts))
            self.token_ids.extend(ids)
            self.starts.append(len(self.token_ids))
            self.texts.append(texts[position])
            self.records.append(records[position])

    def closest(self, text: str, exclude_record: str | None = None) -> Closest:
        """The pooled text with the highest ROUGE-L to `text` (the earliest of equals), skipping the texts
        of `exclude_record`: exactly what scoring `text` against every pooled text would find."""
        tokens = tokenize(text)
        query = [self.vocabulary.get(token, -1) for token in tokens]
        bounds = self._bounds(query)
        if bounds is None:
            return Closest(0.0, None, None)
        lookup = self._query_masks(query)
        best_score, best_position = 0.0, -1
        remaining = np.flatnonzero(bounds > 0)
        while len(remaining):
            if len(remaining) > BLOCK:  # the BLOCK best bounds, without sorting the rest
                remaining = remaining[np.argpartition(-bounds[remaining], BLOCK)]
            block, remaining = remaining[:BLOCK], remaining[BLOCK:]
            if exclude_record is not None:
                block = block[[self.records[p] != exclude_record for p in block.tolist()]]
            if len(block):
                scores = self._scores(query, lookup, block)
                top = float(scores.max())
                winner = int(block[scores == top].min())
                if top > best_score or (top == best_score and top > 0 and winner < best_position):
                    best_score, best_position = top, winner
            remaining = remaining[bounds[remaining] >= best_score - TOLERANCE]  # the rest cannot reach it
        if best_position < 0:
            return Closest(0.0, None, None)
        closest_text = self.texts[best_position]
        return Closest(rouge_l(text, closest_text), self.first_slot + best_position, closest_text)

    def _bounds(self, query: Sequence[int]) -> np.ndarray | None:
        """Per live text, 2*overlap/(m+n): an upper bound on its ROUGE-L F to the query (0 for dead texts)."""
        lists = [np.frombuffer(self.postings[feature], dtype=np.int32)
                 for feature in _features(query) if feature in self.postings]
        if not lists or not len(self) or not query:
            return None
        overlap = np.bincount(np.concatenate(lists), minlength=len(self.texts))
        overlap[:self._evicted] = 0
        lengths: np.ndarray = np.diff(np.frombuffer(self.starts, dtype=np.int64)) + len(query)
        bounds: np.ndarray = 2.0 * overlap / lengths
        return bounds

    def _query_masks(self, query: Sequence[int]) -> np.ndarray:
        """Per token id, the bit set of query positions holding it (the last entry: no token, no bits)."""
        lookup = np.zeros(len(self.vocabulary) + 1, dtype=np.uint64)
        if len(query) <= MASK_BITS:
            for position, token in enumerate(query):
                if token >= 0:
                    lookup[token] |= np.uint64(1 << position)
        return lookup

    def _scores(self, query: Sequence[int], lookup: np.ndarray, block: np.ndarray) -> np.ndarray:
        """ROUGE-L F of the query against each text in `block` (local positions)."""
        starts = np.frombuffer(self.starts, dtype=np.int64)
        begin, lengths = starts[block], starts[block + 1] - starts[block]
        if len(query) <= MASK_BITS:
            lcs = self._lcs_block(len(query), lookup, begin, lengths)
        else:
            lcs = np.array([_lcs_length(query, self.token_ids[b:b + n]) for b, n in
                            zip(begin.tolist(), lengths.tolist(), strict=True)])
        return f_measure(lcs, len(query), lengths)

    def _lcs_block(self, size: int, lookup: np.ndarray, begin: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Bit-parallel LCS lengths of a query of `size` <= 64 tokens against many texts at once."""
        ids = np.frombuffer(self.token_ids, dtype=np.int32)
        width = int(lengths.max())
        columns = np.arange(width)
        inside = columns[None, :] < lengths[:, None]
        tokens = np.where(inside, ids[np.minimum(begin[:, None] + columns[None, :], len(ids) - 1)], -1)
        matches = lookup[tokens]  # -1 picks the last (empty) slot
        full = np.uint64((1 << size) - 1)
        rows = np.full(len(begin), full, dtype=np.uint64)
        for column in range(width):
            match = rows & matches[:, column]
            rows = ((rows + match) | (rows - match)) & full
        return size - np.bitwise_count(rows).astype(np.int64)


def _features(ids: Iterable[int]) -> list[int]:
    """A multiset as a set: the k-th occurrence of a token is its own feature, so shared features count
    the multiset overlap. A feature is one int (token id and occurrence), not a tuple: ints are not tracked
    by the garbage collector, whose full passes would otherwise grow with the index and pause every thread."""
    seen: dict[int, int] = {}
    features = []
    for token in ids:
        if token < 0:
            continue  # a query token no pooled text has
        occurrence = seen[token] = seen.get(token, 0) + 1
        features.append(token * OCCURRENCES + occurrence)
    return features


def _lcs_length(query: Sequence[int], text: Sequence[int]) -> int:
    """Bit-parallel LCS length with Python integers (any length)."""
    masks: dict[int, int] = {}
    for position, token in enumerate(query):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(query)) - 1
    row = full
    for token in text:
        mask = masks.get(token)
        if mask:
            match = row & mask
            row = ((row + match) | (row - match)) & full
    return len(query) - bin(row).count("1")

"""Measures of text, one definition each, shared by the `tagger` node (over one text) and the report (over a
corpus), so a record's tags and the report's figures agree.

They sit at the base, beside the error types, because a node (a plugin of the engine) and the report (a layer
above it) both use them, and a plugin may not import the report (tests/test_layering.py). The corpus figures
built on them (sampling, self-BLEU, embeddings, histograms) stay the report's (`synthloom.inspect.metrics`).
"""
from __future__ import annotations

import gzip
import re
from collections.abc import Iterator

import textstat

WORD = re.compile(r"\w+(?:'\w+)*")


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation: the unit of distinct-n, self-BLEU and lengths."""
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    return zip(*(tokens[index:] for index in range(n)), strict=False)


def distinct_n(token_lists: list[list[str]], n: int) -> float | None:
    """Corpus-level distinct-n: unique n-grams / all n-grams, n-grams taken within each text."""
    unique: set[tuple[str, ...]] = set()
    total = 0
    for tokens in token_lists:
        grams = list(ngrams(tokens, n))
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else None


def compression_ratio(texts: list[str]) -> float | None:
    """bytes of the texts joined by newlines / bytes of their gzip; higher means more repetitive."""
    data = "\n".join(texts).encode("utf-8")
    return len(data) / len(gzip.compress(data, compresslevel=9, mtime=0)) if data else None


def flesch_reading_ease(text: str) -> float | None:
    """textstat's Flesch Reading Ease (higher is easier), English syllable rules; None for a text without a word."""
    if not WORD.search(text):
        return None
    return float(textstat.flesch_reading_ease(text))


def warm_up_readability() -> None:
    """textstat reads its pronunciation dictionary (~1 s) on first use: do it once, before the threads start."""
    textstat.flesch_reading_ease("Warm up.")

"""Novelty: ms per check of the `novelty` node's index against pools of 1k/10k/100k instruction-like texts,
the speed-up over today's exhaustive check (rouge-score against every pooled text) at 5k, the agreement of
the two on a stream of texts with planted near-duplicates, and what `dedup` keeps per kept text.

The corpus (tests/novelty_corpus.py): instruction openers + 4-28 words, function words at their usual
rate and Zipf-drawn content words from 8,000 made-up ones; queries are half fresh texts, half near-copies
of pooled ones (0 to half their words edited), so a share of them are refused.

    python bench/novelty.py                    # pools 1k/10k/100k, exhaustive at 5k, agreement on 2,000
    python bench/novelty.py --agreement 500 --queries 100
    python bench/novelty.py --sizes --exhaustive-size 0 --agreement 0     # only the dedup figures
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synthloom_nodes.dedup.base import Origin  # noqa: E402
from synthloom_nodes.dedup.exact import ExactIndex  # noqa: E402
from synthloom_nodes.dedup.minhash import MinHashIndex  # noqa: E402
from synthloom_nodes.rouge_index import RougeIndex, rouge_l  # noqa: E402

from tests.novelty_corpus import corpus, near_copy, sentence  # noqa: E402

THRESHOLD = 0.7


def queries(pooled: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [near_copy(rng.choice(pooled), rng) if n % 2 else sentence(rng) for n in range(count)]


def exhaustive(text: str, pooled: list[str]) -> tuple[float, str | None]:
    best, closest = 0.0, None
    for item in pooled:
        score = rouge_l(text, item)
        if score > best:
            best, closest = score, item
    return best, closest


def time_index(size: int, count: int) -> tuple[float, float, float, float]:
    """Index `size` texts; the mean, median and 95th percentile ms per check, and the share refused."""
    pooled = corpus(size, seed=size)
    index = RougeIndex()
    for number, text in enumerate(pooled):
        index.add(text, f"r{number}")
    times, refused = [], 0
    for text in queries(pooled, count, seed=1):
        start = time.perf_counter()
        refused += index.closest(text, exclude_record="query").score >= THRESHOLD
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.mean(times), times[len(times) // 2], times[int(len(times) * 0.95)], refused / count


def speed_up_at(size: int, count: int) -> tuple[float, float]:
    """ms per check, exhaustive and indexed, on the same pool and queries."""
    pooled = corpus(size, seed=size)
    index = RougeIndex()
    for number, text in enumerate(pooled):
        index.add(text, f"r{number}")
    asked = queries(pooled, count, seed=2)
    start = time.perf_counter()
    found = [index.closest(text) for text in asked]
    indexed = (time.perf_counter() - start) * 1000 / count
    start = time.perf_counter()
    reference = [exhaustive(text, pooled) for text in asked]
    slow = (time.perf_counter() - start) * 1000 / count
    assert [(f.score, f.text) for f in found] == reference, "the index and the exhaustive check disagree"
    return slow, indexed


def agreement(size: int) -> tuple[int, int, int]:
    """Stream `size` texts through check-then-add both ways; (agreeing checks, checks, refused)."""
    index, pooled = RougeIndex(), []
    agreed = refused = 0
    for number, text in enumerate(corpus(size, seed=7, planted=0.45)):
        found = index.closest(text)
        best, closest = exhaustive(text, pooled)
        agreed += (found.score >= THRESHOLD) == (best >= THRESHOLD) and (found.score, found.text) == (best, closest)
        if best >= THRESHOLD:
            refused += 1
        else:
            pooled.append(text)
            index.add(text, f"r{number}")
    return agreed, size, refused


def dedup_footprint(size: int) -> list[tuple[str, float, float, float]]:
    """Bytes of memory (tracemalloc) and of index file per kept text, and ms per look-up-and-add, at `size`
    kept texts."""
    texts = corpus(size, seed=11, planted=0.0)
    rows = []
    for name, index in (("exact", ExactIndex()), ("minhash", MinHashIndex(0.8, 128, 5))):
        signatures = [index.signature(text) for text in texts]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        for number, signature in enumerate(signatures):
            index.check_and_add(signature, Origin("run", f"r{number}"))
        elapsed = time.perf_counter() - start
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        rows.append((name, used / size, os.path.getsize(index.file.path) / size, elapsed * 1000 / size))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exhaustive-size", type=int, default=5_000)
    parser.add_argument("--exhaustive-queries", type=int, default=20)
    parser.add_argument("--agreement", type=int, default=2_000)
    parser.add_argument("--dedup-size", type=int, default=20_000)
    args = parser.parse_args()

    if args.sizes:
        print("novelty: ms per check (indexed, exact ROUGE-L maximum), target < 10 ms at 100k")
        print(f"{'pool':>8} {'mean':>7} {'p50':>7} {'p95':>7} {'refused':>8}")
        for size in args.sizes:
            mean, median, p95, refused = time_index(size, args.queries)
            print(f"{size:>8} {mean:>7.2f} {median:>7.2f} {p95:>7.2f} {refused:>8.0%}")
    if args.exhaustive_size:
        slow, fast = speed_up_at(args.exhaustive_size, args.exhaustive_queries)
        print(f"\nat {args.exhaustive_size} pooled: exhaustive {slow:.1f} ms, indexed {fast:.2f} ms per check, "
              f"speed-up x{slow / fast:.0f} (same scores and closest texts)")
    if args.agreement:
        agreed, checks, refused = agreement(args.agreement)
        print(f"\nagreement with the exhaustive check on a stream of {checks} texts ({refused} refused): "
              f"{agreed}/{checks} = {agreed / checks:.2%} (decision, score and closest text)")
    if args.dedup_size:
        print(f"\ndedup at {args.dedup_size} kept texts, per kept text: bytes of memory (the entries are on "
              f"disk), bytes of index file; ms per look-up-and-add")
        for name, in_memory, on_disk, per_check in dedup_footprint(args.dedup_size):
            print(f"{name:>8} {in_memory:>6.0f} B {on_disk:>6.0f} B {per_check:>7.3f} ms")

if __name__ == "__main__":
    main()

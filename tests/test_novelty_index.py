"""The `novelty` node's index finds what scoring every pooled text with rouge-score finds: the same
admit/refuse decision, the same best score and the same most similar text, on a stream of instructions
with planted near-duplicates; and the event loop keeps running while it works on a large pool."""
from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from collections.abc import Awaitable
from pathlib import Path

from rouge_score import rouge_scorer
from synthloom.graph.context import RunContext
from synthloom.graph.record_pool import RecordPool
from synthloom.models.clients import ModelPool
from synthloom_nodes.rouge_index import Closest, RougeIndex, _lcs_length, rouge_l, tokenize
from synthloom_nodes.task_pool import Novelty, NoveltyParams, PreloadSpec

from tests.novelty_corpus import corpus, near_copy, sentence

THRESHOLD = 0.7


def exhaustive(text: str, pooled: list[dict[str, object]], record: str) -> tuple[float, str | None]:
    """Today's check, as it was: rouge-score against every pooled text, oldest first, strict `>`."""
    best, closest = 0.0, None
    for item in pooled:
        if item["record"] == record:
            continue
        score = rouge_l(text, str(item["text"]))
        if score > best:
            best, closest = score, str(item["text"])
    return best, closest


def stream(texts: list[str], max_size: int, index: RougeIndex) -> tuple[int, list[float], list[str]]:
    """Run `texts` through novelty's check-then-add on a pool of `max_size`; compare each check with the
    exhaustive one. Returns the agreements, the exhaustive best scores, and the disagreements."""
    pool = RecordPool("tasks", max_size, None, None)
    agreed, scores, mismatches = 0, [], []
    for number, text in enumerate(texts):
        record = f"r{number % 997}"  # some records come back (a loop): their own texts must not count
        index.follow(pool)
        found = index.closest(text, exclude_record=record)
        best, closest = exhaustive(text, list(pool.items), record)
        scores.append(best)
        if (found.score >= THRESHOLD) == (best >= THRESHOLD) and found.score == best and found.text == closest:
            agreed += 1
        else:
            mismatches.append(f"{text!r}: index {found.score} {found.text!r}, exhaustive {best} {closest!r}")
        if best < THRESHOLD:
            pool.add(record, {"text": text})
    return agreed, scores, mismatches


def test_the_index_decides_as_the_exhaustive_check_does() -> None:
    texts = corpus(500, seed=7, planted=0.45)
    agreed, scores, mismatches = stream(texts, 100_000, RougeIndex())
    assert mismatches == [] and agreed == len(texts)
    refused = sum(score >= THRESHOLD for score in scores)
    close_calls = sum(0.6 <= score < 0.8 for score in scores)
    assert refused > 40 and len(texts) - refused > 200 and close_calls > 30  # both sides, and near the line


def test_a_bounded_pool_drops_its_oldest_texts_from_the_index_too() -> None:
    """max_size 60: texts leave the pool, and the index, which rebuilds its arrays as they do."""
    index = RougeIndex(rebuild_after=20)
    agreed, _, mismatches = stream(corpus(400, seed=3, planted=0.5), 60, index)
    assert mismatches == [] and agreed == 400
    assert len(index) == 60 and index.first_slot > 0  # rebuilt: the arrays start past the dropped texts


def test_bit_parallel_lcs_is_rouge_scores_lcs() -> None:
    """Queries longer than 64 tokens take the one-by-one path; both equal rouge-score's table."""
    rng = random.Random(11)
    index = RougeIndex()
    pairs = []
    for number in range(120):
        reference = sentence(rng, longest=90 if number % 3 == 0 else 28)
        candidate = near_copy(reference, rng) if rng.random() < 0.7 else sentence(rng, longest=90)
        pairs.append((candidate, reference))
        index.add(reference, None)
    for candidate, reference in pairs:
        reference_tokens, candidate_tokens = tokenize(reference), tokenize(candidate)
        assert _lcs_length(candidate_tokens, reference_tokens) == \
            rouge_scorer._lcs_table(reference_tokens, candidate_tokens)[-1][-1]
        best = max((rouge_l(candidate, text), -number) for number, text in enumerate(index.texts))
        found = index.closest(candidate)
        assert (found.score, found.slot) == (best[0], -best[1] if best[0] > 0 else None)


def test_texts_without_tokens_are_always_novel() -> None:
    index = RougeIndex()
    index.add("¿Qué? éé", None)  # rouge-score keeps ASCII letters and digits only: tokens "qu"
    index.add("ñé!", None)  # no tokens at all
    assert index.closest("!!!") == index.closest("é") == Closest(0.0, None, None)
    assert index.closest("qu").slot == 0


async def heartbeat_gaps(work: Awaitable[object]) -> list[float]:
    """The gaps between the beats of a 10 ms `asyncio.sleep` loop running beside `work`."""
    gaps: list[float] = []
    finished = asyncio.Event()

    async def beat() -> None:
        last = time.perf_counter()
        while not finished.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def run() -> None:
        try:
            await work
        finally:
            finished.set()

    gc.collect()
    gc.freeze()  # what earlier tests left in memory is not scanned by full collections (they pause all threads)
    try:
        await asyncio.gather(beat(), run())
    finally:
        gc.unfreeze()
    return gaps


async def test_the_event_loop_keeps_beating_during_checks_on_a_large_pool(tmp_path: Path) -> None:
    """Indexing 20,000 pooled texts and checking 200 records against them, 16 at a time, runs in a worker
    thread: a 10 ms heartbeat on the loop is never held up for 500 ms. On the loop, indexing the pool alone
    held it for over a second, and the exhaustive check about one second per record; in a thread the loop
    waits at most a GIL switch interval (5 ms) plus what the machine's load adds (this bound leaves room
    for a loaded shared machine)."""
    texts = corpus(20_200, seed=5)
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"instruction": text}) + "\n" for text in texts[:20_000]))
    node = Novelty("novel", NoveltyParams(field="instruction", pool="tasks",
                                          preload=PreloadSpec(file="pool.jsonl", field="instruction")))
    ctx = RunContext(models=ModelPool({}), base_dir=tmp_path)
    await node.setup(ctx)  # reading the preload file and importing rouge-score: before records are in flight
    slots = asyncio.Semaphore(16)

    async def check(number: int, text: str) -> object:
        async with slots:
            return await node.run({"id": f"q{number}", "instruction": text}, ctx)

    async def checks() -> list[object]:
        return await asyncio.gather(*(check(n, text) for n, text in enumerate(texts[20_000:])))

    gaps = await heartbeat_gaps(checks())
    assert len(ctx.record_pool("tasks").items) > 20_000  # some were admitted, so the index grew while checked
    assert len(gaps) > 20 and sum(gap > 0.5 for gap in gaps) == 0, [round(gap, 3) for gap in gaps if gap > 0.05]

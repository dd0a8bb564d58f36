"""Studio page times: a run with a 1M-record output against one with 200 records, through a real studio
over HTTP (aiohttp client, loopback), with the index in a fresh cache folder.

Figures: the first page of a never-opened output (no index yet: the page reads forward from the start of
the file while the index builds in a thread), the time to index the whole file, the first page and the
last page once indexed, and a filtered, sorted page (score >= 9, highest first) the first time (it adds
an expression index on `score`) and again. Records are written directly as the quickstart workflow writes
them (a question, an answer of 60-120 words, its metadata), so the file has the size a real run's has.

    python bench/studio.py                 # 200 and 1,000,000 records
    python bench/studio.py --sizes 200 100000
    python bench/studio.py --keep /tmp/studio-runs   # write the files once, measure again later

Measured on the 2-core machine at load 5 (not quiet): first page of a never-opened output 56 ms at 1M
records (733 MB) against 59 ms at 200; the index of the 1M file built in 42.6 s meanwhile; then the first
and last pages 29 and 34 ms, `score>=9` sorted by score 93 ms (86 ms the next page), a text search page
33 ms (against 14, 24, 26 and 18 ms at 200).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

WORDS = ("the of water light cloud moon rain ice float dense air pressure wind star gas heat ocean tide pull "
         "sand rock worn river sea flows into because when which causes sound thunder kite fly").split()


def write_run(directory: Path, count: int) -> None:
    directory.mkdir(parents=True)
    rng = random.Random(count)
    with (directory / "sft.jsonl").open("wb") as handle:
        for number in range(count):
            answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 120))).capitalize() + "."
            record = {"messages": [{"role": "user", "content": f"Why does {rng.choice(WORDS)} {rng.choice(WORDS)}?"},
                                   {"role": "assistant", "content": answer}],
                      "metadata": {"id": f"r{number:07d}", "graph": "quickstart", "config_hash": "f7440fd9d38b6b54",
                                   "llm_calls": rng.randint(4, 5), "retries": 0, "tokens": rng.randint(150, 300),
                                   "score": float(rng.randint(6, 10)), "revisions": rng.randint(0, 1)}}
            handle.write(orjson.dumps(record) + b"\n")
    manifest = {"graph": "quickstart", "status": "completed", "counts": {"seeded": count, "written": count,
                                                                         "outputs": {"sft": count}}}
    (directory / "manifest.json").write_bytes(orjson.dumps(manifest))


async def timed(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url) as response:
        assert response.status == 200, (response.status, await response.text())
        body = await response.text()
    assert body.count("<article") >= 1
    return time.perf_counter() - started


async def measure(root: Path, sizes: list[int]) -> None:
    from synthloom.studio.records import index_of
    from synthloom.studio.serve import start_studio
    runner, url = await start_studio([root], "127.0.0.1", 0)
    base = url.rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            await timed(session, f"{base}/runs/warm-up/files/sft")  # templates compiled before the clock runs
            for count in sizes:
                files = f"{base}/runs/r{count}/files/sft"
                size = (root / f"r{count}" / "sft.jsonl").stat().st_size
                cold = await timed(session, files)
                index = index_of(root / f"r{count}" / "sft.jsonl")
                started = time.perf_counter()
                await asyncio.to_thread(index.update)   # joins the build the first page started
                built = time.perf_counter() - started + cold
                warm = await timed(session, files)
                last = await timed(session, f"{files}?start={max(0, count - 25)}")
                filtered_first = await timed(session, f"{files}?where=score%3E%3D9&sort=-score")
                filtered_again = await timed(session, f"{files}?where=score%3E%3D9&sort=-score&start=25")
                search = await timed(session, f"{files}?q=thunder")
                print(f"{count:>9,} records ({size / 1e6:,.0f} MB): first page cold {cold * 1000:.0f} ms, "
                      f"indexed in {built:.1f} s, first page {warm * 1000:.0f} ms, last page {last * 1000:.0f} ms, "
                      f"filtered+sorted {filtered_first * 1000:.0f} ms first / {filtered_again * 1000:.0f} ms "
                      f"next page, text search page {search * 1000:.0f} ms", flush=True)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1_000_000])
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them (written once, reused)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        root = args.keep or Path(folder) / "runs"
        os.environ["SYNTHLOOM_CACHE_DIR"] = str(Path(folder) / "cache")  # a fresh index every time
        for count in [10, *args.sizes]:
            directory = root / ("warm-up" if count == 10 else f"r{count}")
            if not directory.exists():
                started = time.perf_counter()
                write_run(directory, count)
                print(f"wrote {count:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        asyncio.run(measure(root, args.sizes))


if __name__ == "__main__":
    main()

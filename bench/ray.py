"""`run --ray`: 1 shard vs 2 shards against 2 fixture servers of limited capacity, same run, same budget.

Two fixture servers in their own processes answer 429 beyond `--capacity` requests at once, after
`--latency` seconds. The graph's model lists both as replicas with `max_concurrency` = 2 x capacity (the
run-wide budget, split as leases across the shards; with two shards each talks to one replica, see
`split_replicas`), and each record also runs the `tagger` node on its seed passage of `--words` words
(local quality tags: CPU work in the engine's process, as a real graph's local nodes do). One shard is
one process doing every record's engine work; two shards split it over two processes. Both go through
`run_on_ray` on one local Ray (2 CPUs), so the difference is the sharding alone. Prints wall times and
the ratio.

The budget is run-wide, so sharding pays only where one process cannot keep the budget busy: with light
local work (`--words 200`) both take the same time (ratio 0.99 on a quiet 2-core machine: the two
servers' 16 slots are the limit); with the default `--words 4000` one process is CPU-bound and 2 shards
finished 1.28x and 1.38x faster in two runs (5.98 s vs 4.69 s, 6.21 s vs 4.52 s). An earlier measurement,
with five other jobs loading the machine, gave 1.18x.

    python bench/ray.py                 # N=400 records of 2 calls, L=50 ms, capacity 8 per server
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# this file is named ray.py: its own folder must not shadow the ray package
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]


def start_server(latency: float, capacity: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "tests.fixture_server", "--latency", str(latency), "--capacity", str(capacity)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex every jovial bard".split()


def passage(seed: int, words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + ("." if rng.random() < 0.08 else "") for _ in range(words))


def graph_spec(urls: list[str], capacity: int) -> dict[str, Any]:
    return {
        "name": "ray-bench", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
        "models": {"m": {"backend": "openai", "base_url": urls, "model": "m", "timeout": 10,
                         "max_concurrency": capacity * len(urls)}},
        "nodes": {
            "question": {"type": "llm", "model": "m", "output": "question",
                         "messages": [{"role": "user", "content": "Ask about topic {{ index }}"}]},
            "answer": {"type": "llm", "model": "m", "output": "answer",
                       "messages": [{"role": "user", "content": "{{ question }} (answer at length)"}]},
            "tags": {"type": "tagger", "field": "passage", "output": "tags"},
        },
        "edges": [["question", "answer"], ["answer", "tags"]],
        "outputs": [{"name": "out", "format": "raw", "fields": ["question", "answer", "tags"]}],
    }


def run(base: Path, shards: int, records: int) -> tuple[float, dict[str, Any]]:
    from synthloom.distributed.driver import run_on_ray
    started = time.perf_counter()
    manifest = run_on_ray(base / "g.yaml", base / f"out-{shards}", shards=shards, use_cache=False,
                          retry_base_delay=0.05)
    wall = time.perf_counter() - started
    assert manifest["status"] == "completed" and manifest["counts"]["written"] == records, manifest["counts"]
    return wall, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--records", type=int, default=400)
    parser.add_argument("--words", type=int, default=4000, help="words in each seed's passage (tagger work)")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--capacity", type=int, default=8, help="requests at once each server takes")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import ray
    servers: list[tuple[subprocess.Popen[str], str]] = []
    try:
        servers = [start_server(args.latency, args.capacity) for _ in range(2)]
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as folder:
            base = Path(folder)
            (base / "seeds.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "index": i,
                                                                  "passage": passage(i, args.words)}) + "\n"
                                                      for i in range(args.records)))
            (base / "g.yaml").write_text(yaml.safe_dump(graph_spec([url for _, url in servers], args.capacity)))
            run(base, 2, args.records)  # warm up: Ray's workers started and imports done for both cases
            shutil.rmtree(base / "out-2")
            one, one_manifest = run(base, 1, args.records)
            two, two_manifest = run(base, 2, args.records)
            print(json.dumps({
                "run": "ray shards", "records": args.records, "calls_per_record": 2, "latency_s": args.latency,
                "servers": 2, "capacity_per_server": args.capacity,
                "one_shard_s": round(one, 3), "two_shards_s": round(two, 3), "speedup": round(one / two, 2),
                "peak_in_flight": {"one": one_manifest["concurrency"]["m"]["peak"],
                                   "two": two_manifest["concurrency"]["m"]["peak"]},
                "tagger_step_p50_s": one_manifest["nodes"]["tags"]["step_seconds"]["p50"],
                "retries": {"one": one_manifest["models"]["m"].get("retries"),
                            "two": two_manifest["models"]["m"].get("retries")},
            }, indent=2))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for process, _ in servers:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()

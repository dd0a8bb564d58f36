"""Replicas and adaptive concurrency, measured against fixture servers in their own processes.

1. One replica vs three (same per-call latency): how close three come to 3x.
2. Three replicas with one killed a quarter into the run: the run completes, at about two-thirds speed.
3. A server that answers 429 beyond `capacity` concurrent requests, driven with max_concurrency far above
   it: adaptive concurrency on vs off (wall time, 429s taken, retries).

    python bench/replicas.py            # N=1500 records of one call, L=50 ms
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def start_server(latency: float, capacity: int | None = None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "tests.fixture_server", "--latency", str(latency)]
    if capacity:
        command += ["--capacity", str(capacity)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def run_graph(urls: list[str], records: int, concurrency: int, adaptive: bool = True,
              kill: tuple[float, subprocess.Popen[str]] | None = None,
              must_finish: bool = True) -> tuple[float, dict[str, Any]]:
    import synthloom
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "seeds.jsonl").write_text("".join(json.dumps({"index": i}) + "\n" for i in range(records)))
        spec = {"name": "replicas", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
                "models": {"m": {"backend": "openai", "base_url": urls, "model": "m", "timeout": 5,
                                 "max_concurrency": concurrency, "adaptive": adaptive}},
                "nodes": {"answer": {"type": "llm", "model": "m", "output": "answer",
                                     "messages": [{"role": "user", "content": "Question {{ index }}"}]}},
                "outputs": [{"name": "out", "format": "raw"}]}
        (base / "g.yaml").write_text(yaml.safe_dump(spec))
        graph = synthloom.load(base / "g.yaml")
        timer = None
        if kill is not None:
            timer = threading.Timer(kill[0], kill[1].kill)
            timer.start()
        started = time.perf_counter()
        result = asyncio.run(synthloom.arun(graph, base / "out", use_cache=False, retry_base_delay=0.05))
        wall = time.perf_counter() - started
        if timer:
            timer.join()
        if must_finish:
            assert result.manifest["counts"]["written"] == records, result.manifest["counts"]
        return wall, result.manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--records", type=int, default=1500)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--per-replica", type=int, default=32, help="max_concurrency per replica")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    n, latency, slots = args.records, args.latency, args.per_replica
    servers = [start_server(latency) for _ in range(3)]
    try:
        one, _ = run_graph([servers[0][1]], n, slots)
        three, _ = run_graph([url for _, url in servers], n, 3 * slots)
        print(json.dumps({"run": "replicas", "records": n, "latency_s": latency, "one_replica_s": round(one, 3),
                          "three_replicas_s": round(three, 3), "speedup": round(one / three, 2)}, indent=2))
        dead, manifest = run_graph([url for _, url in servers], n, 3 * slots, kill=(three / 4, servers[1][0]))
        print(json.dumps({"run": "one of three killed at 25%", "wall_s": round(dead, 3),
                          "speed_vs_three_healthy": round(three / dead, 2),
                          "retries": manifest["models"]["m"]["retries"],
                          "replicas": manifest["concurrency"]["m"]["replicas"]}, indent=2))
    finally:
        for process, _ in servers:
            process.kill()
    full, url = start_server(latency, capacity=slots)
    try:
        results = {}
        for adaptive in (True, False):
            wall, manifest = run_graph([url], n, 4 * slots, adaptive=adaptive, must_finish=False)
            model = manifest["models"]["m"]
            results["adaptive" if adaptive else "fixed"] = {
                "wall_s": round(wall, 3), "written": manifest["counts"]["written"],
                "failed": manifest["counts"]["failed"], "status": manifest["status"], "retries": model["retries"],
                "final_limit": manifest["concurrency"]["m"]["limit"], "cuts": manifest["concurrency"]["m"]["cuts"]}
        print(json.dumps({"run": f"server full beyond {slots}, max_concurrency {4 * slots}", **results,
                          "ideal_s": round(n * latency / slots, 3)}, indent=2))
    finally:
        full.kill()


if __name__ == "__main__":
    main()

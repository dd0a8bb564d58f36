"""Throughput: synthloom against a plain hand-written aiohttp client, same calls, same server, one run.

A graph of three chained `llm` nodes runs over N records against the fixture OpenAI server (in its own
process, with latency L per call) with S concurrent slots. The baseline does the very same three dependent
calls per record with aiohttp and a semaphore of S, nothing else. We report both wall times, their ratio,
and the CPU each spends per call (node step) at zero latency, where the client side is all there is.

    python bench/throughput.py                 # N=2000, L=50 ms, S=128, then the zero-latency CPU run
    python bench/throughput.py -n 500 --latency 0.02 --slots 64
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
STEPS = 3


@contextmanager
def fixture_server(latency: float) -> Iterator[str]:
    """The tests' fixture server, in a separate process so its CPU is not counted as ours."""
    process = subprocess.Popen([sys.executable, "-m", "tests.fixture_server", "--latency", str(latency)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)


def prompts(index: int, previous: str | None, step: int) -> list[dict[str, str]]:
    if step == 0:
        return [{"role": "user", "content": f"Write a question about topic {index}"}]
    return [{"role": "user", "content": f"Step {step}: {previous}"}]


async def plain_client(url: str, records: int, slots: int) -> tuple[float, float]:
    """What a careful user writes by hand: one session, a semaphore, three dependent calls a record."""
    semaphore = asyncio.Semaphore(slots)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def call(messages: list[dict[str, str]]) -> str:
            async with semaphore, session.post(f"{url}/chat/completions",
                                    json={"model": "m", "messages": messages, "max_tokens": 64}) as reply:
                data = await reply.json()
                return data["choices"][0]["message"]["content"]

        async def record(index: int) -> None:
            text: str | None = None
            for step in range(STEPS):
                text = await call(prompts(index, text, step))

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(record(index) for index in range(records)))
        return time.perf_counter() - wall, time.process_time() - cpu


def graph_file(folder: Path, url: str, records: int, slots: int) -> Path:
    (folder / "seeds.jsonl").write_text("".join(json.dumps({"index": i}) + "\n" for i in range(records)))
    step_nodes = {
        "step0": {"type": "llm", "model": "m", "output": "text0",
                  "messages": [{"role": "user", "content": "Write a question about topic {{ index }}"}]},
        **{f"step{step}": {"type": "llm", "model": "m", "output": f"text{step}",
                           "messages": [{"role": "user", "content": f"Step {step}: {{{{ text{step - 1} }}}}"}]}
           for step in range(1, STEPS)}}
    spec = {"name": "bench", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
            "models": {"m": {"backend": "openai", "base_url": url, "model": "m", "max_concurrency": slots,
                             "params": {"max_tokens": 64}, "adaptive": False}},
            "nodes": step_nodes, "edges": [[f"step{s}", f"step{s + 1}"] for s in range(STEPS - 1)],
            "outputs": [{"name": "out", "format": "raw"}]}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def framework(url: str, records: int, slots: int) -> tuple[float, float, dict[str, Any]]:
    import synthloom
    with tempfile.TemporaryDirectory() as folder:
        graph = synthloom.load(graph_file(Path(folder), url, records, slots))
        wall, cpu = time.perf_counter(), time.process_time()
        result = await synthloom.arun(graph, Path(folder) / "out", use_cache=False)
        return time.perf_counter() - wall, time.process_time() - cpu, result.manifest


def measure(records: int, latency: float, slots: int) -> dict[str, Any]:
    with fixture_server(latency) as url:
        asyncio.run(plain_client(url, min(records, 200), slots))  # warm both sides up
        plain_wall, plain_cpu = asyncio.run(plain_client(url, records, slots))
        ours_wall, ours_cpu, manifest = asyncio.run(framework(url, records, slots))
    calls = records * STEPS
    assert manifest["counts"]["written"] == records, manifest["counts"]
    return {"records": records, "latency_s": latency, "slots": slots,
            "plain_wall_s": round(plain_wall, 3), "synthloom_wall_s": round(ours_wall, 3),
            "wall_ratio": round(ours_wall / plain_wall, 3),
            "plain_cpu_us_per_call": round(plain_cpu / calls * 1e6, 1),
            "synthloom_cpu_us_per_step": round(ours_cpu / calls * 1e6, 1),
            "synthloom_overhead_us_per_step": round((ours_cpu - plain_cpu) / calls * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--records", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--slots", type=int, default=128)
    parser.add_argument("--cpu-records", type=int, default=1000, help="records for the zero-latency CPU run")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    loaded = measure(args.records, args.latency, args.slots)
    print(json.dumps({"run": "latency", **loaded}, indent=2))
    cpu = measure(args.cpu_records, 0.0, args.slots)
    print(json.dumps({"run": "zero-latency CPU", **cpu}, indent=2))


if __name__ == "__main__":
    main()

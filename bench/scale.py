"""Scale: peak memory of a whole `synthloom run` as the seed file grows, one llm node, zero latency.

Each size runs the real CLI in its own process against the fixture OpenAI server (also its own process)
and reads that process's peak RSS from the kernel (wait4). Flat memory means the peak at 1M records is
within 10% of the peak at 100k; the records/s figure says what the machine did meanwhile.

    python bench/scale.py                        # 100k and 1M records
    python bench/scale.py --sizes 10000 100000 1000000 10000000
    python bench/scale.py --dedup exact          # the same with a dedup index that keeps every record

Measured on a quiet 2-core machine: 100k 73.2 MB, 1M 74.3 MB (1.015x), 10M 74.2 MB (1.014x), about
5,500 records/s (10M in 30 minutes). With `--dedup exact`
(an index that keeps every record): 100k 89.0 MB, 1M 90.3 MB (1.015x), about 4,000 records/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from throughput import fixture_server  # noqa: E402  (the bench folder is not a package)


def write_inputs(folder: Path, url: str, records: int, dedup: str | None = None) -> Path:
    with (folder / "seeds.jsonl").open("w") as handle:
        for index in range(records):
            handle.write(f'{{"id": "r{index}", "topic": "topic {index}"}}\n')
    spec = {"name": "scale", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
            "models": {"m": {"backend": "openai", "base_url": url, "model": "m", "max_concurrency": 64,
                             "adaptive": False, "params": {"max_tokens": 16}}},
            "nodes": {"answer": {"type": "llm", "model": "m", "output": "answer",
                                 "messages": [{"role": "user", "content": "Say something about {{ topic }}"}]}},
            "outputs": [{"name": "out", "format": "raw", "fields": ["topic", "answer"]}]}
    if dedup:  # every answer differs (it quotes its topic), so the index keeps every record
        spec["nodes"]["unique"] = {"type": "dedup", "field": "answer", "method": dedup}
        spec["edges"] = [["answer", "unique"]]
    path = folder / "scale.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_once(url: str, records: int, dedup: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as name:
        folder = Path(name)
        graph = write_inputs(folder, url, records, dedup)
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o",
                                    str(folder / "out"), "-q", "--no-cache"], cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the run of {records} records failed")
        manifest = json.loads((folder / "out" / "manifest.json").read_text())
        assert manifest["counts"]["written"] == records, manifest["counts"]
        return {"records": records, "dedup": dedup, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "wall_s": round(wall, 1), "records_per_s": round(records / wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dedup", choices=["exact", "minhash"], help="add a dedup node that keeps every record")
    args = parser.parse_args()
    results = []
    with fixture_server(0.0) as url:
        for size in args.sizes:
            results.append(run_once(url, size, args.dedup))
            print(json.dumps(results[-1]), flush=True)
    base = results[0]["peak_rss_mb"]
    for result in results[1:]:
        print(f"peak RSS at {result['records']:,} records = {result['peak_rss_mb'] / base:.3f} x the peak at "
              f"{results[0]['records']:,} (target <= 1.10)")


if __name__ == "__main__":
    main()

"""Past one machine: run a graph's seed shards as Ray tasks (an existing distributed engine, not ours).

Each task runs the ordinary single-process engine on shard k of n (records whose id hashes to k), into
<output dir>/shard-k, against the graph's model servers (typically shared `vllm serve` replicas). Shards
are independent runs, so each is resumable on its own, and `merge_outputs` concatenates their outputs.

    manifests = run_on_ray("graphs/quickstart.yaml", "runs/big", shards=8, address="auto",
                           endpoint="http://vllm-host:8000/v1")
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _run_shard(graph: str, output_dir: str, index: int, shards: int, overrides: list[str],
               endpoint: str | None, options: dict[str, Any]) -> dict[str, Any]:
    from . import api
    loaded = api.load(graph, [*overrides, f"seed.shard=[{index}, {shards}]"], endpoint)
    return api.run(loaded, Path(output_dir) / f"shard-{index:03d}", **options).manifest


def run_on_ray(graph: str | Path, output_dir: str | Path, shards: int, *, overrides: list[str] | None = None,
               endpoint: str | None = None, address: str | None = None, num_cpus_per_shard: float = 1,
               **options: Any) -> list[dict[str, Any]]:
    """Run `shards` shards as Ray tasks; returns their manifests. `address=None` starts a local Ray;
    `overrides` and `endpoint` are those of `synthloom run`, applied in every task."""
    try:
        import ray
    except ImportError:
        raise ConfigError("running on Ray needs the ray extra: pip install -e '.[ray]'") from None
    if shards < 1:
        raise ConfigError("shards must be at least 1")
    from . import api
    api.load(graph, overrides, endpoint)  # refuse a bad graph here, once, not in every task
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=num_cpus_per_shard)(_run_shard)
    futures = [task.remote(str(Path(graph).resolve()), str(Path(output_dir).resolve()), index, shards,
                           list(overrides or []), endpoint, options) for index in range(shards)]
    return list(ray.get(futures))


def merge_outputs(output_dir: str | Path, names: list[str]) -> dict[str, int]:
    """Concatenate each shard's `<name>.jsonl` into `<output dir>/<name>.jsonl`; returns line counts."""
    root = Path(output_dir)
    counts: dict[str, int] = {}
    for name in names:
        target = root / f"{name}.jsonl"
        counts[name] = 0
        with target.open("w", encoding="utf-8") as merged:
            for shard in sorted(root.glob("shard-*")):
                part = shard / f"{name}.jsonl"
                if part.exists():
                    with part.open(encoding="utf-8") as source:
                        shutil.copyfileobj(source, merged)
                    counts[name] += sum(1 for _ in part.open(encoding="utf-8"))
    return counts

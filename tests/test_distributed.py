"""Seed shards run as Ray tasks (local Ray here) write every record exactly once across shards."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from synthloom.distributed import merge_outputs, run_on_ray

from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph, lines

ray = pytest.importorskip("ray", reason="needs the ray extra")


def test_shards_on_ray_cover_the_seed_once(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                                           tmp_path: Path) -> None:
    server = fake_llm(latency=0.005)
    seeds = [{"id": f"r{index:03d}", "topic": f"topic {index}"} for index in range(60)]
    graph = write_graph(chain_graph(server), seeds)
    try:
        manifests = run_on_ray(graph, tmp_path / "out", shards=3, num_cpus_per_shard=0.5, use_cache=False)
    finally:
        ray.shutdown()
    assert [m["status"] for m in manifests] == ["completed"] * 3
    assert all(m["counts"]["written"] > 0 for m in manifests)
    assert merge_outputs(tmp_path / "out", ["sft"]) == {"sft": 60}
    ids = [record["metadata"]["id"] for record in lines(tmp_path / "out" / "sft.jsonl")]
    assert sorted(ids) == [seed["id"] for seed in seeds]
    assert server.successes == 120

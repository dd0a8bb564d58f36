"""Batch models under `run --ray`: each shard is an ordinary run with its own batch ledger
(`shards/k/batches.sqlite`); the driver's manifest sums them. Against the Batch API fixture, with every
submitted line counted at the server, through a clean run, a shard whose worker is killed while its batch
is pending, and a run stopped (Ctrl-C) while every shard's batch is."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from synthloom.distributed.driver import run_on_ray

from tests.fixture_batches import FakeBatches
from tests.fixture_server import FakeOpenAI
from tests.test_batch_api import batch_chain, batch_llm, submissions
from tests.test_distributed import ids_in, local_ray, seeds_of
from tests.test_run import lines

pytest.importorskip("ray", reason="run --ray needs the ray extra (pip install -e '.[ray]')")
pytestmark = pytest.mark.slow
__all__ = ["batch_llm", "local_ray"]  # fixtures this module uses, defined beside the tests they came with


def shard_batches(out: Path, count: int) -> list[dict[str, Any]]:
    """Each shard's own `batches.w` figures, from its own manifest."""
    return [json.loads((out / "shards" / str(index) / "manifest.json").read_text())["batches"]["w"]
            for index in range(count)]


def ledger_lines(out: Path, count: int) -> int:
    return sum(lines for index in range(count) for _, _, lines in submissions(out / "shards" / str(index)))


def test_two_shards_send_every_call_through_their_own_batches_and_the_manifest_sums_them(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    seeds = seeds_of(40)
    out = tmp_path / "out"
    manifest = run_on_ray(write_graph(batch_chain(server), seeds), out, shards=2, num_cpus_per_shard=0.5,
                          use_cache=False)
    assert manifest["status"] == "completed", manifest["message"]
    assert ids_in(out / "sft.jsonl") == [seed["id"] for seed in seeds]  # each record once
    assert server.requests == 0  # no synchronous call
    assert batches.submitted == 80 and set(batches.lines.values()) == {1}  # 2 calls a record, each paid once
    per_shard = shard_batches(out, 2)
    assert all(shard["submitted"] > 0 for shard in per_shard)  # both shards batched, each in its own ledger
    figures = manifest["batches"]["w"]
    assert figures["submitted"] == sum(shard["submitted"] for shard in per_shard) == len(batches.batches)
    assert figures["lines"] == sum(shard["lines"] for shard in per_shard) == sum(batches.line_sizes) == 80
    assert figures["by_status"] == {"completed": len(batches.batches)}
    assert ledger_lines(out, 2) == 80
    assert figures["lines_per_batch"] == {"min": min(batches.line_sizes), "max": max(batches.line_sizes)}
    assert figures["pending"] == 0 and figures["waiting_calls"] == 0 and figures["oldest_pending_s"] is None
    assert manifest["models"]["w"]["batch_calls"] == 80


def test_a_shard_killed_while_its_batch_is_pending_resumes_and_pays_for_no_call_twice(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """Ray retries the task of a dead worker; the retry resumes the shard, finds its pending batch in the
    shard's ledger and waits for it instead of submitting its calls again."""
    server, batches = batch_llm()
    batches.hold()
    seeds = seeds_of(40)
    out = tmp_path / "out"
    result: dict[str, Any] = {}
    driver = threading.Thread(target=lambda: result.update(run_on_ray(
        write_graph(batch_chain(server), seeds), out, shards=2, num_cpus_per_shard=0.5, use_cache=False)))
    driver.start()
    lock, journal = out / "shards" / "0" / ".synthloom.lock", out / "shards" / "0" / "journal.jsonl"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and batches.submitted < 40:
            time.sleep(0.05)
        # every record's first call waits in a batch held at the provider: a batch model's lines are bounded
        # by `max_requests`, not leased from `max_concurrency` (which held a whole run to 8 waiting lines)
        assert batches.submitted == 40
        assert any(batch_id for batch_id, _, _ in submissions(out / "shards" / "0"))  # and in shard 0's ledger
        holder = re.match(r"pid (\d+)", lock.read_text())
        assert holder, lock.read_text()
        os.kill(int(holder.group(1)), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len([entry for entry in lines(journal) if "id" not in entry]) < 2:
            time.sleep(0.05)
        time.sleep(1.0)  # the retried task resumed the shard: it follows the held batch, sending nothing again
        assert batches.submitted == 40
    finally:
        batches.release()
        driver.join(180)
    assert not driver.is_alive()
    assert result["status"] == "completed", result["message"]
    assert ids_in(out / "sft.jsonl") == [seed["id"] for seed in seeds]
    assert server.requests == 0
    assert batches.submitted == 80 and set(batches.lines.values()) == {1}
    figures = result["batches"]["w"]
    assert figures["submitted"] == len(batches.batches) and figures["lines"] == 80 == ledger_lines(out, 2)
    assert result["shards"][0]["counts"]["written"] + result["shards"][1]["counts"]["written"] == 40
    assert len([entry for entry in lines(journal) if "id" not in entry]) == 2  # the killed part, the resumed one


def test_a_stopped_ray_run_lists_every_shards_batches_left_running_and_resume_collects_them(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """Ctrl-C (the driver's StopRequests, as the CLI's signal handler fills it) while every shard waits on
    a held batch: the shards drain, leave their batches running (paid for), and the manifest names all of
    them; --resume collects their answers without sending a call twice."""
    from synthloom.engine.stops import StopRequests
    server, batches = batch_llm()
    batches.hold()
    spec = batch_chain(server)
    spec["run"] = {"drain_seconds": 0.3}
    seeds = seeds_of(40)
    graph = write_graph(spec, seeds)
    out = tmp_path / "out"
    stops = StopRequests()
    result: dict[str, Any] = {}
    driver = threading.Thread(target=lambda: result.update(run_on_ray(
        graph, out, shards=2, num_cpus_per_shard=0.5, use_cache=False, stops=stops)))
    driver.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and batches.submitted < 40:
            time.sleep(0.05)
        assert batches.submitted == 40
        stops.request()
        driver.join(120)
    finally:
        batches.release()
        driver.join(120)
    assert result["status"] == "interrupted", result["message"]
    left = result["batches"]["w"]["left_running"]
    assert sorted(left) == sorted(batches.batches) and batches.cancelled == []
    assert all(shard["left_running"] for shard in shard_batches(out, 2))  # both shards left some: joined
    resumed = run_on_ray(graph, out, shards=2, num_cpus_per_shard=0.5, use_cache=False, resume=True)
    assert resumed["status"] == "completed", resumed["message"]
    assert ids_in(out / "sft.jsonl") == [seed["id"] for seed in seeds]
    assert batches.submitted == 80 and set(batches.lines.values()) == {1} and server.requests == 0
    assert "left_running" not in resumed["batches"]["w"]

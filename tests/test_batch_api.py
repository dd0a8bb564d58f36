"""Batch models (`models.<name>.batch`) against a fixture that speaks the OpenAI Batch API: plain runs, mixed
graphs, critic loops, exactly once across kill -9 and Ctrl-C (every submitted line counted at the server),
batches that expire or fail, per-line errors, the cache, cost and the manifest."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.fixture_batches import FakeBatches
from tests.fixture_server import FakeOpenAI
from tests.test_exactly_once import record_ids
from tests.test_run import chain_graph, lines

TOPICS = [{"id": f"t{index:04d}", "topic": f"topic {index}"} for index in range(200)]
FAST = {"max_requests": 50, "max_wait_s": 0.2, "poll_seconds": 0.05}


@pytest.fixture
def batch_llm() -> Iterator[Callable[..., tuple[FakeOpenAI, FakeBatches]]]:
    """A fixture server with the Batch API attached; stopped after the test."""
    servers: list[FakeOpenAI] = []

    def start(complete_after: float = 0.0, fail_lines: dict[str, tuple[int, int]] | None = None,
              **options: Any) -> tuple[FakeOpenAI, FakeBatches]:
        server = FakeOpenAI(**options)
        batches = FakeBatches(server, complete_after=complete_after, fail_lines=fail_lines)
        server.start()
        servers.append(server)
        return server, batches

    yield start
    for server in servers:
        server.stop()


def batch_chain(server: FakeOpenAI, batch: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    spec = chain_graph(server, **model)
    spec["models"]["w"]["batch"] = batch or FAST
    return spec


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


def submissions(out: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(out / "batches.sqlite") as db:
        return [(str(row[0]), str(row[1]), int(row[2])) for row in
                db.execute("SELECT batch_id, status, lines FROM submissions ORDER BY id")]


# -- a plain run -----------------------------------------------------------------------------------------

async def test_a_batch_model_sends_every_call_through_batches_and_none_synchronously(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    out = tmp_path / "out"
    result = await synthloom.arun(write_graph(batch_chain(server), TOPICS[:120]), out, use_cache=False)
    sft = lines(result.path("sft"))
    assert len(sft) == 120
    assert server.requests == 0  # the synchronous endpoint never saw a call
    assert batches.submitted == 240 and set(batches.lines.values()) == {1}
    assert all(size <= 50 for size in batches.line_sizes)
    by_id = {row["metadata"]["id"]: row for row in sft}
    assert by_id["t0007"]["messages"][0]["content"] == "Reply to: Ask about topic 7"
    assert by_id["t0007"]["messages"][1]["content"] == "Reply to: Reply to: Ask about topic 7"
    assert [status for _, status, _ in submissions(out)] == ["completed"] * len(batches.line_sizes)


# -- exactly once across kill -9 and Ctrl-C ---------------------------------------------------------------

def start_cli(graph: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_submissions(out: Path, at_least: int, timeout: float = 60) -> None:
    """Until the run's ledger holds `at_least` batches the provider created."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sum(1 for batch_id, _, _ in submissions(out) if batch_id != "None") >= at_least:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the run did not submit {at_least} batches within {timeout}s")


@pytest.mark.slow
def test_kill_9_while_the_first_batch_is_pending_then_resume_submits_every_call_exactly_once(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The done criterion of issue 23: a 2-node graph, 200 records, kill -9 while the first batch is pending;
    --resume writes every record once and the server saw every call's line exactly once."""
    monkeypatch.setenv("SYNTHLOOM_CACHE_DIR", str(tmp_path / "cache"))
    server, batches = batch_llm()
    batches.hold()
    graph = write_graph(batch_chain(server), TOPICS)
    out = tmp_path / "out"
    process = start_cli(graph, out)
    wait_for_submissions(out, 1)
    assert batches.statuses()["in_progress"] >= 1 and not batches.statuses()["completed"]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    before = batches.submitted
    assert before >= 50
    batches.release()
    resumed = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                              "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    written = record_ids(out, "sft")
    assert len(written) == 200 and set(written.values()) == {1}
    assert batches.submitted == 400 and set(batches.lines.values()) == {1}  # 200 records x 2 nodes, once each
    assert server.requests == 0
    assert manifest(out)["counts"]["written"] == 200


@pytest.mark.slow
@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_leaves_pending_batches_running_unless_asked_to_cancel_them(
        cancel: bool, batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    batches.hold()
    spec = batch_chain(server)
    spec["run"] = {"drain_seconds": 0.3}
    graph = write_graph(spec, TOPICS[:60])
    out = tmp_path / "out"
    process = start_cli(graph, out, "--no-cache", *(["--cancel-batches"] if cancel else []))
    wait_for_submissions(out, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    created = [batch_id for batch_id, _, _ in submissions(out) if batch_id != "None"]
    if cancel:
        assert sorted(batches.cancelled) == sorted(created)
        assert {status for _, status, _ in submissions(out)} == {"cancelled"}
    else:
        assert batches.cancelled == [] and batches.statuses()["in_progress"] == len(created)
        assert "left running at the provider" in stderr and "--resume" in stderr
    batches.release()
    resumed = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                              "--resume", "--no-cache"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(record_ids(out, "sft")) == 60
    # left running: every call was paid for once; cancelled: the cancelled lines were sent again, once
    assert set(batches.lines.values()) == {1} if not cancel else max(batches.lines.values()) == 2

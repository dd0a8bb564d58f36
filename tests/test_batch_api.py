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
from tests.conftest import model_spec
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

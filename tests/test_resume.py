"""Crash, kill -9 and Ctrl-C lose nothing: --resume finishes with every seed record written exactly once."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph

SEEDS = [{"id": f"rec-{index:04d}", "topic": f"topic {index}"} for index in range(300)]


def start_run(graph: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_journal(out: Path, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    journal = out / "journal.jsonl"
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count("\n") > at_least:
            return
        time.sleep(0.05)
    raise AssertionError("the run did not get going")


def ids_in(path: Path) -> Counter[str]:
    return Counter(json.loads(line)["metadata"]["id"] for line in path.read_text().splitlines())


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_resume_after_kill_or_ctrl_c_writes_each_record_once(
        how: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.02, hold=["^Ask about topic 299$"])  # the run cannot end before the stop
    server.keep_bodies = False
    spec = chain_graph(server, max_concurrency=16, timeout=600)
    spec["run"] = {"drain_seconds": 1}  # the held record is cancelled after it, not waited for
    graph = write_graph(spec, SEEDS)
    out = tmp_path / "out"
    process = start_run(graph, out)
    wait_for_journal(out, 40)
    if how == "kill":
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    else:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert "--resume" in stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"
    partial = ids_in(out / "sft.jsonl")
    assert 0 < len(partial) < 300
    server.release()
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                           "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("sft", "raw"):
        ids = ids_in(out / f"{name}.jsonl")
        assert set(ids) == {seed["id"] for seed in SEEDS}
        assert max(ids.values()) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["counts"]["written"] == 300 and manifest["counts"]["outputs"]["sft"] == 300
    assert manifest["counts"]["resumed_from_journal"] >= len(partial) - 1


def test_resume_drops_lines_of_unjournaled_records(fake_llm: Callable[..., FakeOpenAI],
                                                   write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """A crash between writing a record's lines and journaling it: the lines go, the record runs again."""
    server = fake_llm()
    graph = write_graph(chain_graph(server), SEEDS[:5])
    out = tmp_path / "out"
    assert subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q"],
                          capture_output=True).returncode == 0
    journal = (out / "journal.jsonl").read_text().splitlines()
    (out / "journal.jsonl").write_text("\n".join(journal[:-2]) + "\n" + journal[-2][:7])  # last two not done
    with (out / "sft.jsonl").open("a") as handle:
        handle.write('{"messages": [{"role": "user", "con')  # a line cut mid-write
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                           "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ids = ids_in(out / "sft.jsonl")
    assert set(ids) == {seed["id"] for seed in SEEDS[:5]} and max(ids.values()) == 1


def test_resume_refuses_a_changed_graph(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                                        tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(chain_graph(server), SEEDS[:3])
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q"], check=True)
    changed = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                              "--resume", "--set", "nodes.answer.params.temperature=0.1"],
                             capture_output=True, text=True)
    assert changed.returncode == 2 and "the graph changed since the run" in changed.stderr
    assert "Traceback" not in changed.stderr

"""Sync Python tools that hang (tools/threads.py), in real runs against the fixture server: a call past its
timeout fails its tool call and leaves its thread behind, counted; once every thread of the entry is held,
the entry's calls fail at once; the loop's default executor stays free (a model reached as `localhost`
still gets its DNS lookup, `asyncio.to_thread` still runs), and the `synthloom run` process exits at the
end of its run, or on Ctrl-C, with the hung thread still sleeping."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines
from tests.test_tools import KIT, calls_then_answers, tool_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXECUTOR = min(32, (os.cpu_count() or 1) + 4)
"""Threads of the loop's default executor (ThreadPoolExecutor's default size), which DNS lookups share."""

HANGING = '''import pathlib
import threading

RELEASE = threading.Event()


def hang(topic: str) -> str:
    """Look a topic up (and never come back)."""
    pathlib.Path(__file__).with_name("entered").touch()
    RELEASE.wait()
    return "too late"
'''


def hanging_module(folder: Path, name: str) -> str:
    """A graph-folder module whose `hang` tool waits until the test sets its RELEASE (or for ever)."""
    (folder / f"{name}.py").write_text(HANGING)
    return f"{name}:hang"


def two_step_graph(server: FakeOpenAI, hang: str, threads: int) -> dict[str, Any]:
    """`solve` calls tools; `check` asks a second model reached by the name `localhost`, whose connection
    needs a getaddrinfo on the default executor, only after `solve`'s calls have hung."""
    by_name = server.url.replace("127.0.0.1", "localhost")
    return {
        "name": "hung",
        "models": {"w": model_spec(server), "named": model_spec(server, base_url=by_name)},
        "run": {"max_in_flight": 1},
        "tools": {"slow": {"python": [hang], "timeout": 0.2, "threads": threads},
                  "kit": {"python": KIT[:1]}},
        "nodes": {"solve": {"type": "llm", "model": "w", "tools": ["slow", "kit"],
                            "messages": [{"role": "user", "content": "{{ question }}"}],
                            "output": "answer", "trajectory": "trajectory"},
                  "check": {"type": "llm", "model": "named",
                            "messages": [{"role": "user", "content": "Check: {{ answer }}"}], "output": "verdict"}},
        "edges": [["solve", "check"]],
        "outputs": [{"name": "raw", "format": "raw"}],
    }


async def test_hung_calls_time_out_fail_fast_once_all_threads_hang_and_leave_the_default_executor_free(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    threads = DEFAULT_EXECUTOR + 1  # more hung threads than the default executor has
    hung_calls = [("hang", {"topic": f"t{index}"}) for index in range(threads + 1)]

    def solve(body: dict[str, Any]) -> Any:
        if "sum" in body["messages"][0]["content"]:
            return calls_then_answers(("calculate", {"expression": "2+3"}))(body)
        return calls_then_answers(*hung_calls)(body)
    server = fake_llm(script=[("Check:", "verified"), (".", solve)])
    hang = hanging_module(tmp_path, "hang_tools_fail_fast")
    path = write_graph(two_step_graph(server, hang, threads), [{"question": "look it all up"},
                                                              {"question": "what is the sum?"}])
    try:
        result = await asyncio.wait_for(synthloom.arun(path, tmp_path / "out"), 120)
        first = tool_results(server.bodies[1])
        assert first[:threads] == ["error: hang gave no result within 0.2s"] * threads
        assert first[threads] == (f"error: hang not called: all {threads} threads of tools entry 'slow' are "
                                  f"held by calls that outlived their 0.2s timeout; raise the entry's timeout or "
                                  f"threads, make the tool async, or fix what hangs")
        records = {record["question"]: record for record in lines(result.path("raw"))}
        assert records["look it all up"]["verdict"] == "verified"  # `localhost` was looked up after the hangs
        assert records["what is the sum?"]["answer"] == "Results: 5.0"  # another entry's sync tool still ran
        assert records["what is the sum?"]["verdict"] == "verified"
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["tool_threads"] == {"slow": {"threads": threads, "abandoned": threads, "still_hung": threads},
                                            "kit": {"threads": 8, "abandoned": 0, "still_hung": 0}}
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 10) == "free"
    finally:
        sys.modules["hang_tools_fail_fast"].RELEASE.set()


COUNTED = '''import threading
import time

LOCK = threading.Lock()
NOW = 0
PEAK = 0


def nap(topic: str) -> str:
    """Take a while."""
    global NOW, PEAK
    with LOCK:
        NOW += 1
        PEAK = max(PEAK, NOW)
    time.sleep(0.2)
    with LOCK:
        NOW -= 1
    return "rested"
'''


async def test_an_entrys_threads_bound_its_calls_at_once_and_a_busy_entry_waits_rather_than_fails(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "counted_tools.py").write_text(COUNTED)
    server = fake_llm(script=[(".", calls_then_answers(("nap", {"topic": "x"})))])
    spec = {"name": "busy", "models": {"w": model_spec(server)}, "run": {"max_in_flight": 6},
            "tools": {"slow": {"python": ["counted_tools:nap"], "timeout": 20, "threads": 2}},
            "nodes": {"solve": {"type": "llm", "model": "w", "tools": ["slow"],
                                "messages": [{"role": "user", "content": "{{ question }}"}], "output": "answer"}},
            "outputs": [{"name": "raw", "format": "raw"}]}
    path = write_graph(spec, [{"question": f"nap {index}"} for index in range(6)])
    result = await synthloom.arun(path, tmp_path / "out")
    assert [record["answer"] for record in lines(result.path("raw"))] == ["Results: rested"] * 6
    assert sys.modules["counted_tools"].PEAK <= 2  # six records at once, never more than two threads


async def test_a_subgraphs_hung_tool_threads_count_in_the_runs_manifest(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("hang", {"topic": "x"})))])
    hang = hanging_module(tmp_path, "hang_tools_sub")
    child = {"name": "child", "models": {"w": model_spec(server)},
             "tools": {"slow": {"python": [hang], "timeout": 0.2, "threads": 3}},
             "nodes": {"solve": {"type": "llm", "model": "w", "tools": ["slow"],
                                 "messages": [{"role": "user", "content": "{{ question }}"}], "output": "answer"}}}
    write_graph(child, name="child.yaml")
    parent = {"name": "outer", "nodes": {"sub": {"type": "subgraph", "graph": "child.yaml",
                                                 "inputs": {"question": "question"}, "outputs": {"answer": "answer"}}},
              "outputs": [{"name": "raw", "format": "raw"}]}
    try:
        result = await synthloom.arun(write_graph(parent, [{"question": "look it up"}]), tmp_path / "out")
        assert lines(result.path("raw"))[0]["answer"] == "Results: error: hang gave no result within 0.2s"
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["tool_threads"] == {"sub.slow": {"threads": 3, "abandoned": 1, "still_hung": 1}}
    finally:
        sys.modules["hang_tools_sub"].RELEASE.set()


def test_threads_is_a_python_entrys_setting(write_graph: Callable[..., Path]) -> None:
    spec = {"name": "mcp", "tools": {"kit": {"command": ["python", "-m", "synthloom_graphs.tool_server"],
                                             "threads": 4}},
            "nodes": {"ask": {"type": "llm", "tools": ["kit"], "messages": [{"role": "user", "content": "hi"}],
                              "output": "answer"}}}
    with pytest.raises(synthloom.ConfigError, match=r"tools.kit.*threads: sizes a python entry's worker threads"):
        synthloom.load(write_graph(spec))


def _start_run(folder: Path, server: FakeOpenAI, timeout: float, seeds: int,
               write_graph: Callable[..., Path]) -> subprocess.Popen[str]:
    hang = hanging_module(folder, "hang_tools_cli")
    spec = {"name": "hung-cli", "models": {"w": model_spec(server)},
            "tools": {"slow": {"python": [hang], "timeout": timeout}},
            "nodes": {"solve": {"type": "llm", "model": "w", "tools": ["slow"],
                                "messages": [{"role": "user", "content": "{{ question }}"}], "output": "answer"}},
            "run": {"drain_seconds": 1},
            "outputs": [{"name": "raw", "format": "raw"}]}
    path = write_graph(spec, [{"question": f"look up {index}"} for index in range(seeds)])
    return subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(path), "-o", str(folder / "out")],
                            cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_run_whose_tool_hangs_ends_and_its_process_exits(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("hang", {"topic": "x"})))])
    run = _start_run(tmp_path, server, timeout=0.3, seeds=2, write_graph=write_graph)
    try:
        _, stderr = run.communicate(timeout=120)  # the hung threads still sleep: they must not hold the exit
    finally:
        run.kill()
    assert run.returncode == 0, stderr
    assert [record["answer"] for record in lines(tmp_path / "out" / "raw.jsonl")] == [
        "Results: error: hang gave no result within 0.3s"] * 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["tool_threads"] == {"slow": {"threads": 8, "abandoned": 2, "still_hung": 2}}
    assert "tool threads abandoned 2 (slow 2/8 still hung)" in stderr  # the last progress line


@pytest.mark.slow
def test_ctrl_c_stops_a_run_waiting_on_a_hung_tool(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("hang", {"topic": "x"})))])
    run = _start_run(tmp_path, server, timeout=600, seeds=1, write_graph=write_graph)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "entered").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "entered").exists(), "the run never called its tool"
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"

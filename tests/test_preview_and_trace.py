"""`synthloom preview` and `run --trace`: one trace per node step, with the rendered request, the reply,
the output and the edges taken, from a real walk against the fixture server."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph

SEEDS = [{"topic": "t1"}, {"topic": "boom"}, {"topic": "t2"}]
STEPS = ["question", "answer", "check", "count", "improve", "count", "improve", "count"]


def loop_graph(server: FakeOpenAI) -> dict[str, Any]:
    """The question -> answer chain of test_run, then a check and a bounded improve loop; sft output only."""
    spec = chain_graph(server)
    spec["name"] = "traced"
    spec["nodes"].update({
        "check": {"type": "tests.plugins_for_tests:explode"},
        "count": {"type": "tests.plugins_for_tests:word_count"},
        "improve": {"type": "llm", "model": "w", "output": "answer",
                    "messages": [{"role": "user", "content": "improve {{ answer }}"}]},
    })
    spec["edges"] += [["answer", "check"], ["check", "count"],
                      {"from": "count", "to": "improve", "when": "words < 100", "max_visits": 2},
                      ["improve", "count"]]
    spec["outputs"] = spec["outputs"][:1]
    return spec


def scripted(fake_llm: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_llm(script=[("^Ask about (.*)", lambda body: f"Why {body['messages'][-1]['content'][10:]}?"),
                            ("^improve", "better answer"), ("^Why", "Because.")])


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, run from `cwd` (where a default run directory would land), with tests/ importable."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_run_trace_writes_one_line_per_step(fake_llm: Callable[..., FakeOpenAI],
                                            write_graph: Callable[..., Path], tmp_path: Path) -> None:
    graph = write_graph(loop_graph(scripted(fake_llm)), SEEDS)
    result = synthloom.run(graph, tmp_path / "out", trace=True, use_cache=False)
    traces = jsonl(tmp_path / "out" / "traces.jsonl")
    written = {row["metadata"]["id"] for row in result.records("sft")}
    failed = {row["id"] for row in jsonl(tmp_path / "out" / "failed.jsonl")}
    assert len(written) == 2 and len(failed) == 1
    assert {line["id"] for line in traces} == written | failed
    assert len(traces) == 2 * len(STEPS) + 3
    for record_id in written:
        steps = sorted((line for line in traces if line["id"] == record_id), key=lambda line: line["step"])
        assert [line["node"] for line in steps] == STEPS
        question = steps[0]
        topic = "t1" if question["reads"] == {"topic": "t1"} else "t2"
        assert question["calls"][0]["messages"] == [{"role": "user", "content": f"Ask about {topic}"}]
        assert question["calls"][0]["reply"] == f"Why {topic}?" and question["output"] == {"question": f"Why {topic}?"}
        # the fixture counts words: 3 prompt words, 2 reply words
        assert (question["tokens"], question["attempts"], question["type"]) == (5, 1, "llm")
        assert steps[1]["calls"][0]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert steps[1]["output"] == {"answer": "Because."}
        first_count, last_count = steps[3], steps[7]
        assert first_count["output"] == {"words": 1}
        assert first_count["edges"] == [{"to": "improve", "when": "words < 100", "value": True, "max_visits": 2,
                                         "taken": True, "why": "when is True"}]
        assert last_count["edges"][0]["taken"] is False and "max_visits 2 reached" in last_count["edges"][0]["why"]
        assert steps[4]["calls"][0]["messages"] == [{"role": "user", "content": "improve Because."}]
        assert steps[6]["calls"][0]["messages"] == [{"role": "user", "content": "improve better answer"}]
        assert all(line["latency_s"] >= 0 for line in steps)
    boom = [line for line in traces if line["id"] in failed]
    assert [line["node"] for line in boom] == ["question", "answer", "check"]
    assert boom[-1]["error"] == "ValueError: this topic always fails" and boom[-1]["output"] is None


def test_run_without_trace_writes_no_traces(fake_llm: Callable[..., FakeOpenAI],
                                            write_graph: Callable[..., Path], tmp_path: Path) -> None:
    graph = write_graph(loop_graph(scripted(fake_llm)), SEEDS[:1])
    synthloom.run(graph, tmp_path / "out", trace=True)
    assert (tmp_path / "out" / "traces.jsonl").exists()
    synthloom.run(graph, tmp_path / "out", overwrite=True)  # a stale trace would belong to another run
    assert not (tmp_path / "out" / "traces.jsonl").exists()


def test_cli_run_trace_flag(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                            tmp_path: Path) -> None:
    graph = write_graph(loop_graph(scripted(fake_llm)), SEEDS[:1])
    done = cli("run", str(graph), "-o", str(tmp_path / "out"), "--trace", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line["node"] for line in jsonl(tmp_path / "out" / "traces.jsonl")] == STEPS


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if "cache" not in path.relative_to(folder).parts}


def test_preview_json_runs_records_and_writes_nothing(fake_llm: Callable[..., FakeOpenAI],
                                                      write_graph: Callable[..., Path], tmp_path: Path) -> None:
    graph = write_graph(loop_graph(scripted(fake_llm)), SEEDS)
    before = files_under(tmp_path)
    done = cli("preview", str(graph), "-n", "2", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert files_under(tmp_path) == before  # no run directory, no journal, nothing
    records = json.loads(done.stdout)
    assert [record["outcome"] for record in records] == ["written", "failed"]
    first, boom = records
    assert [step["node"] for step in first["steps"]] == STEPS
    assert first["steps"][0]["calls"][0]["messages"] == [{"role": "user", "content": "Ask about t1"}]
    assert first["outputs"]["sft"][0]["messages"] == [{"role": "user", "content": "Why t1?"},
                                                      {"role": "assistant", "content": "better answer"}]
    assert first["outputs"]["sft"][0]["metadata"]["llm_calls"] == 4
    assert boom["node"] == "check" and "this topic always fails" in boom["error"] and boom["outputs"] == {}


def test_preview_plain_text_when_not_a_tty(fake_llm: Callable[..., FakeOpenAI],
                                           write_graph: Callable[..., Path], tmp_path: Path) -> None:
    graph = write_graph(loop_graph(scripted(fake_llm)), SEEDS)
    done = cli("preview", str(graph), "-n", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("=== record 1/1  id ")
    assert "[question (llm)" in out and "user: Ask about t1" in out and "reply: Why t1?" in out
    assert "-> question = Why t1?" in out
    assert "edge -> improve: taken, when `words < 100` is True (max_visits 2)" in out
    assert "edge -> improve: not taken (max_visits 2 reached)" in out
    assert "edge -> answer: taken (unconditional)" in out
    assert "would write:" in out and 'sft.jsonl: {"messages": [{"role": "user", "content": "Why t1?"}' in out
    assert "\x1b[" not in out  # no terminal codes in a pipe
    only = cli("preview", str(graph), "-n", "1", "--node", "improve", cwd=tmp_path).stdout
    assert only.count("[improve (llm)") == 2 and "[question" not in only and "would write" not in only


def test_preview_api_and_unknown_node(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                                      tmp_path: Path) -> None:
    graph = write_graph(loop_graph(scripted(fake_llm)), SEEDS)
    records = synthloom.preview(graph, n=3, node="count")
    assert [record["outcome"] for record in records] == ["written", "failed", "written"]
    assert [step["node"] for step in records[0]["steps"]] == ["count"] * 3 and records[1]["steps"] == []
    with pytest.raises(synthloom.ConfigError, match="--node 'nope' is not a node of traced"):
        synthloom.preview(graph, node="nope")
    done = cli("preview", str(graph), "--node", "nope", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --node 'nope' is not a node of traced (nodes: question, answer, check, count, improve)"]


def test_preview_panels_in_a_terminal_show_data_not_markup(fake_llm: Callable[..., FakeOpenAI],
                                                           write_graph: Callable[..., Path]) -> None:
    from rich.console import Console
    from synthloom.inspect.preview_view import render_rich
    server = fake_llm(script=[("^Ask about", "[bold]not markup[/bold]"), (".", "ok")])
    records = synthloom.preview(write_graph(loop_graph(server), SEEDS), n=1)
    screen = io.StringIO()
    render_rich(records, Console(file=screen, force_terminal=True, width=120, color_system=None))
    text = screen.getvalue()
    assert "question (llm)" in text and "user: Ask about t1" in text and "would write" in text
    assert "reply: [bold]not markup[/bold]" in text

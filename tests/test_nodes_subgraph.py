"""The `subgraph` node: another graph file run as one node for the record, keys mapped in and out."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
import yaml

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import critic_loop, judge, lines


def write_child(tmp_path: Path, parent_server: FakeOpenAI, child_server: FakeOpenAI) -> None:
    """recipes/refine.yaml: answer -> critic -> refine loop. Its `w` clashes with the parent's (which must win:
    the child's points nowhere); its `judge` is its own."""
    child = {
        "name": "refine",
        "models": {"w": {**model_spec(parent_server), "base_url": "http://127.0.0.1:9/v1"},
                   "judge": model_spec(child_server)},
        **critic_loop(judge_model="judge", max_visits=2),
    }
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "recipes" / "refine.yaml").write_text(yaml.safe_dump(child, sort_keys=False))


def parent_graph(server: FakeOpenAI, **subgraph: Any) -> dict[str, Any]:
    return {
        "name": "parent",
        "models": {"w": model_spec(server)},
        "nodes": {
            "ask": {"type": "llm", "model": "w", "output": "q",
                    "messages": [{"role": "user", "content": "Ask about {{ topic }}"}]},
            "sub": {"type": "subgraph", "graph": "recipes/refine.yaml", "inputs": {"question": "q"},
                    "outputs": {"final": "answer", "verdict": "review"}, **subgraph},
            "review": {"type": "llm", "model": "w", "output": "summary",  # same name as a child node
                       "messages": [{"role": "user", "content": "Summarise {{ final }}"}]},
        },
        "edges": [["ask", "sub"], ["sub", "review"]],
        "outputs": [{"name": "raw", "format": "raw"},
                    {"name": "sft", "format": "sft", "messages": [{"role": "user", "content": "{{ q }}"},
                                                                  {"role": "assistant", "content": "{{ final }}"}]}],
    }


async def test_subgraph_outputs_land_in_the_parent_record(fake_llm: Callable[..., FakeOpenAI],
                                                         write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("Ask about", lambda body: body["messages"][-1]["content"].replace("Ask", "Q")),
                              ("Improve", "A refined answer."), ("Summarise", "Short."), (".", "A draft.")])
    judge_server = fake_llm(script=[(".", judge([4, 8]))])
    write_child(tmp_path, server, judge_server)
    seeds = [{"topic": "tides"}, {"topic": "stars"}]
    result = await synthloom.arun(write_graph(parent_graph(server), seeds), tmp_path / "out")
    records = lines(result.path("raw"))
    assert len(records) == 2
    for record in records:
        assert record["final"] == "A refined answer." and record["verdict"]["score"] == 8
        assert record["summary"] == "Short."
        assert "answer" not in record and "review_history" not in record  # only the mapped keys come back
    assert {r["messages"][0]["content"] for r in lines(result.path("sft"))} == {"Q about tides", "Q about stars"}
    assert judge_server.requests == 4  # the child's own model, merged into the run's pool
    nodes = result.manifest["nodes"]
    assert nodes["sub.review"]["steps"] == 4 and nodes["review"]["steps"] == 2  # told apart from the parent's
    assert nodes["sub.answer"]["llm"]["calls"] == 2 and nodes["sub.refine"]["steps"] == 2


async def test_a_failure_inside_names_the_child_node(fake_llm: Callable[..., FakeOpenAI],
                                                    write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", "fine")])
    judge_server = fake_llm(fail_status=400)
    write_child(tmp_path, server, judge_server)
    result = await synthloom.arun(write_graph(parent_graph(server), [{"topic": "tides"}]), tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert [(f["node"], f["error_type"]) for f in failed] == [("sub.review", "ModelCallError")]
    assert result.manifest["counts"]["failure_types"] == {"sub.review: ModelCallError": 1}


def passes(topic: str) -> dict[str, Any]:
    """Returns updates it does not declare, so the graph cannot check what comes after it."""
    return {"other": topic}


async def test_a_missing_input_is_refused_up_front_or_fails_the_record(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server, judge_server = fake_llm(), fake_llm()
    write_child(tmp_path, server, judge_server)
    spec = parent_graph(server)
    spec["nodes"]["ask"] = {"type": "python", "function": "tests.test_nodes_subgraph:passes"}
    spec["nodes"]["ask"]["writes"] = ["other"]
    with pytest.raises(synthloom.ConfigError, match=r"nodes\.sub\.inputs\.question: node 'sub' reads q"):
        synthloom.load(write_graph(spec, [{"topic": "tides"}]))
    del spec["nodes"]["ask"]["writes"]
    await synthloom.arun(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert failed[0]["node"] == "sub" and "inputs: there is no 'q' to copy" in failed[0]["message"]
    assert server.requests == 0


def write_self_including(tmp_path: Path) -> None:
    again = {"name": "again", "nodes": {"again": {"type": "subgraph", "graph": "again.yaml",
                                                  "inputs": {"question": "question"},
                                                  "outputs": {"answer": "answer"}}}}
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "recipes" / "again.yaml").write_text(yaml.safe_dump(again))


@pytest.mark.parametrize("change,words", [
    ({"outputs": {"final": "no_such_key"}}, "outputs: the subgraph refine.yaml writes no 'no_such_key'"),
    ({"graph": "recipes/missing.yaml"}, "in subgraph 'sub': cannot read the graph file"),
    ({"graph": "recipes/again.yaml", "outputs": {"final": "answer"}}, "subgraph includes itself .*again.yaml"),
])
async def test_child_graph_mistakes_stop_the_run_before_any_record(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        change: dict[str, Any], words: str) -> None:
    server, judge_server = fake_llm(), fake_llm()
    write_child(tmp_path, server, judge_server)
    write_self_including(tmp_path)
    graph = write_graph(parent_graph(server, **change), [{"topic": "tides"}])
    with pytest.raises(synthloom.ConfigError, match=words):
        await synthloom.arun(graph, tmp_path / "out")
    assert server.requests == 0

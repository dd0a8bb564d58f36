"""The `python` node: a plain function, named in the YAML, run on each record."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom import Drop

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines


def word_stats(answer: str, topic: str, *, min_words: int = 1, unit: str = "words") -> Any:
    """Sync: reads two state keys, takes two YAML params, drops short answers."""
    words = len(answer.split())
    if words < min_words:
        return Drop("too short", {"words": words})
    return f"{words} {unit} about {topic} (thread {threading.current_thread() is threading.main_thread()})"


async def tag_answer(answer: str, *, tag: str) -> dict[str, Any]:
    """Async: returns a dict of updates."""
    await asyncio.sleep(0)
    return {"tagged": f"[{tag}] {answer}", "tag_length": len(tag)}


def graph(server: FakeOpenAI, **nodes: Any) -> dict[str, Any]:
    return {
        "name": "py",
        "models": {"w": model_spec(server)},
        "nodes": {"answer": {"type": "llm", "model": "w", "output": "answer",
                             "messages": [{"role": "user", "content": "{{ topic }}"}]}, **nodes},
        "edges": [["answer", name] for name in nodes],
        "outputs": [{"name": "raw", "format": "raw"}],
    }


async def test_sync_function_reads_state_keys_and_params(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("tides", "the moon pulls the sea"), ("stars", "hot")])
    spec = graph(server, stats={"type": "python", "function": "tests.test_nodes_python:word_stats",
                                "output": "stats", "args": {"min_words": 2, "unit": "w"}})
    result = await synthloom.arun(write_graph(spec, [{"topic": "tides"}, {"topic": "stars"}]), tmp_path / "out")
    records = lines(result.path("raw"))
    assert [record["stats"] for record in records] == ["5 w about tides (thread False)"]  # run off the loop
    dropped = lines(tmp_path / "out" / "dropped.jsonl")
    assert dropped[0]["reason"] == "too short" and dropped[0]["detail"] == {"words": 1}


async def test_async_function_returns_updates_declared_for_validation(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = graph(server, tag={"type": "python", "function": "tests.test_nodes_python:tag_answer",
                              "args": {"tag": "ok"}, "writes": ["tagged", "tag_length"]})
    spec["nodes"]["use"] = {"type": "llm", "model": "w", "output": "echo",
                            "messages": [{"role": "user", "content": "{{ tagged }}"}]}
    spec["edges"].append(["tag", "use"])
    result = await synthloom.arun(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    record = lines(result.path("raw"))[0]
    assert record["tagged"] == "[ok] Reply to: tides" and record["tag_length"] == 2
    assert record["echo"] == "Reply to: [ok] Reply to: tides"
    spec["nodes"]["use"]["messages"][0]["content"] = "{{ tagged_typo }}"
    with pytest.raises(synthloom.ConfigError, match="reads tagged_typo"):
        synthloom.load(write_graph(spec, [{"topic": "tides"}]))


@pytest.mark.parametrize("node,words", [
    ({"function": "tests.test_nodes_python:no_such"}, r"\.function: module 'tests.test_nodes_python' has no"),
    ({"function": "no_such_module:f"}, r"\.function: graph files may not run 'no_such_module'"),
    ({"function": "tests.test_nodes_python:tag_answer"}, "args.tag: Field required"),
    ({"function": "tests.test_nodes_python:tag_answer", "args": {"tag": "x", "colour": 1}},
     "args.colour: Extra inputs are not permitted .*parameters are: tag"),
])
def test_mistakes_name_the_key(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                               node: dict[str, Any], words: str) -> None:
    spec = graph(fake_llm(), check={"type": "python", **node})
    with pytest.raises(synthloom.ConfigError, match=rf"nodes\.check(: )?{words}"):
        synthloom.load(write_graph(spec, [{"topic": "tides"}]))


def awkward_values(answer: str) -> dict[str, Any]:
    """Values a fast JSON encoder refuses or writes differently from `json`."""
    return {"big": 2 ** 70, "ratio": float("nan"), "tags": {"only"}, "odd": "half \ud800 a pair", "plain": answer}


async def test_values_fast_json_refuses_are_written_and_survive_a_resume(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Output lines go through orjson; what it refuses (an int past 64 bits, a lone surrogate) falls back to
    `json`, NaN becomes null (loadable by `datasets`), and a resume reads those lines back as done."""
    server = fake_llm()
    spec = graph(server, odd={"type": "python", "function": "tests.test_nodes_python:awkward_values",
                              "writes": ["big", "ratio", "tags", "odd", "plain"]})
    path = write_graph(spec, [{"topic": "tides"}, {"topic": "stars"}])
    result = await synthloom.arun(path, tmp_path / "out")
    records = lines(result.path("raw"))
    assert len(records) == 2
    for record in records:
        assert record["big"] == 2 ** 70 and record["ratio"] is None and record["tags"] == "{'only'}"
        assert record["odd"] == "half \ud800 a pair"
    calls = server.requests
    again = await synthloom.arun(path, tmp_path / "out", resume=True)
    assert lines(again.path("raw")) == records and server.requests == calls

"""The `llm` node's few-shot draws and the critic-refine loop, run as whole graphs against the fixture server."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import critic_loop, judge, lines

EXAMPLES = [{"q": f"question {index}", "a": f"answer {index}"} for index in range(10)]
SHOTS = "{% for e in examples %}Q: {{ e.q }} A: {{ e.a }}\n{% endfor %}Q: {{ topic }}"


def few_shot_graph(server: FakeOpenAI, few_shot: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "shots",
        "models": {"w": model_spec(server)},
        "nodes": {"ask": {"type": "llm", "model": "w", "output": "reply", "few_shot": few_shot,
                          "messages": [{"role": "user", "content": SHOTS}]}},
    }


def prompts_by_topic(server: FakeOpenAI) -> dict[str, list[str]]:
    """The example questions each topic's prompt showed, from the requests the server saw."""
    shown: dict[str, list[str]] = {}
    for body in server.bodies:
        text = body["messages"][-1]["content"]
        topic = text.rsplit("Q: ", 1)[1]
        shown[topic] = re.findall(r"Q: (question \d+) A:", text)
    return shown


async def test_few_shot_draws_k_examples_per_record_reproducibly(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    server = fake_llm()
    seeds = [{"topic": f"topic {index}"} for index in range(12)]
    graph = write_graph(few_shot_graph(server, {"pool": "data/examples.jsonl", "k": 3, "seed": 7}), seeds)
    await synthloom.arun(graph, tmp_path / "one", use_cache=False)
    first = prompts_by_topic(server)
    server.reset_counts()
    await synthloom.arun(graph, tmp_path / "two", use_cache=False)
    assert prompts_by_topic(server) == first  # seeded by record id: the same draw on every run
    assert len(first) == 12 and all(len(shown) == 3 and len(set(shown)) == 3 for shown in first.values())
    assert len({tuple(shown) for shown in first.values()}) > 6  # records do not all see the same examples
    server.reset_counts()
    other_seed = write_graph(few_shot_graph(server, {"pool": "data/examples.jsonl", "k": 3, "seed": 8}), seeds,
                             name="other.yaml")
    await synthloom.arun(other_seed, tmp_path / "three", use_cache=False)
    assert prompts_by_topic(server) != first


async def test_few_shot_inline_pool_smaller_than_k(fake_llm: Callable[..., FakeOpenAI],
                                                  write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = few_shot_graph(server, {"pool": EXAMPLES[:2], "k": 5, "as": "shots"})
    spec["nodes"]["ask"]["messages"][0]["content"] = SHOTS.replace("in examples", "in shots")
    result = await synthloom.arun(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 1
    assert sorted(prompts_by_topic(server)["tides"]) == ["question 0", "question 1"]


async def test_few_shot_pool_errors_name_the_key(fake_llm: Callable[..., FakeOpenAI],
                                                write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(few_shot_graph(server, {"pool": "nowhere.jsonl"}), [{"topic": "t"}])
    with pytest.raises(synthloom.ConfigError,
                       match=r"nodes\.ask\.few_shot\.pool: the few-shot pool .*nowhere.jsonl does not exist"):
        await synthloom.arun(graph, tmp_path / "out")
    (tmp_path / "bad.jsonl").write_text('{"q": 1}\n{oops\n')
    graph = write_graph(few_shot_graph(server, {"pool": "bad.jsonl"}), [{"topic": "t"}])
    with pytest.raises(synthloom.ConfigError, match="not valid JSON .*line 2"):
        await synthloom.arun(graph, tmp_path / "out2")
    with pytest.raises(synthloom.ConfigError, match="few-shot pool is empty"):
        synthloom.load(write_graph(few_shot_graph(server, {"pool": []}), [{"topic": "t"}]))
    assert server.requests == 0


def refine_graph(server: FakeOpenAI) -> dict[str, Any]:
    return {"name": "refine", "models": {"w": model_spec(server)}, **critic_loop(max_visits=3),
            "outputs": [{"name": "raw", "format": "raw"}]}


QUESTIONS = [{"question": "Why is the sky blue?"}, {"question": "Why is the sea salty?"}]


async def test_critic_loop_stops_at_the_passing_score(fake_llm: Callable[..., FakeOpenAI],
                                                     write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("Text to review", judge([4, 8])), ("Improve", "Refined."), (".", "Draft.")])
    result = await synthloom.arun(write_graph(refine_graph(server), QUESTIONS), tmp_path / "out")
    records = lines(result.path("raw"))
    assert len(records) == 2
    for record in records:
        assert [entry["score"] for entry in record["review_history"]] == [4, 8]
        assert [entry["draft"] for entry in record["review_history"]] == ["Draft.", "Refined."]
        assert record["review"]["passed"] is True and record["answer"] == "Refined."
    assert result.manifest["nodes"]["refine"]["steps"] == 2  # once per record


async def test_critic_loop_stops_at_max_visits(fake_llm: Callable[..., FakeOpenAI],
                                              write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("Text to review", judge([4])), ("Improve", "Refined."), (".", "Draft.")])
    result = await synthloom.arun(write_graph(refine_graph(server), QUESTIONS), tmp_path / "out")
    records = lines(result.path("raw"))
    assert len(records) == 2
    for record in records:
        assert [entry["score"] for entry in record["review_history"]] == [4, 4, 4, 4]  # first review + 3 refines
        assert record["review"]["passed"] is False
    assert result.manifest["nodes"]["refine"]["steps"] == 6
    assert result.manifest["nodes"]["review"]["steps"] == 8

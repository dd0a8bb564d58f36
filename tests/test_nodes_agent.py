"""The `agent` node (LangGraph's ReAct agent with Python tools, its model behind our model layer) and the
`langgraph` node (a user's compiled LangGraph app), run as whole graphs against the fixture server."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import pytest
import synthloom
from langgraph.graph import END, START, StateGraph

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines

TOOL_CALLS: list[str] = []


def secret_code(word: str) -> str:
    """Look up the secret code of a word."""
    TOOL_CALLS.append(word)
    return hashlib.sha256(word.encode()).hexdigest()[:10]


async def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


def react(body: dict[str, Any]) -> dict[str, Any]:
    """A model that calls secret_code on the word it is asked about, then answers with the tool's result."""
    last = body["messages"][-1]["content"]
    result = re.match(r"Result of secret_code: (\w+)", last)
    if result:
        return {"answer": f"The code is {result.group(1)}."}
    return {"tool": "secret_code", "arguments": {"word": re.search(r"code of (\w+)", last).group(1)}}


def agent_graph(server: FakeOpenAI, **agent: Any) -> dict[str, Any]:
    return {
        "name": "agentic",
        "models": {"w": model_spec(server)},
        "nodes": {"solve": {"type": "agent", "model": "w", "tools": ["tests.test_nodes_agent:secret_code",
                                                                     "tests.test_nodes_agent:shout"],
                            "system": "You help with {{ topic }}.", "input": "What is the code of {{ word }}?",
                            "trace": "trace", **agent}},
        "outputs": [{"name": "raw", "format": "raw"}],
    }


async def test_agent_calls_a_real_tool_and_answers_with_its_result(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    TOOL_CALLS.clear()
    server = fake_llm(script=[(".", react)])
    seeds = [{"topic": "codes", "word": "apple"}, {"topic": "codes", "word": "pear"}]
    result = await synthloom.arun(write_graph(agent_graph(server), seeds), tmp_path / "out")
    records = {record["word"]: record for record in lines(result.path("raw"))}
    assert sorted(TOOL_CALLS) == ["apple", "pear"]
    for word, record in records.items():
        code = hashlib.sha256(word.encode()).hexdigest()[:10]
        assert record["answer"] == f"The code is {code}."
        assert [m["role"] for m in record["trace"]] == ["system", "user", "assistant", "tool", "assistant"]
        assert record["trace"][2]["tool_calls"] == [{"type": "function", "function": {
            "name": "secret_code", "arguments": {"word": word}}}]
        assert record["trace"][3] == {"role": "tool", "content": code, "name": "secret_code"}
    assert server.requests == 4  # our model layer made every call: two per record
    assert result.manifest["nodes"]["solve"]["llm"]["calls"] == 4
    first = server.bodies[0]
    assert first["messages"][0]["role"] == "system" and "You help with codes." in first["messages"][0]["content"]
    assert "secret_code: Look up the secret code of a word." in first["messages"][0]["content"]
    assert "anyOf" in first["response_format"]["json_schema"]["schema"]  # the reply is schema-constrained


async def test_a_malformed_reply_is_shown_to_the_model_and_retried(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    TOOL_CALLS.clear()
    replies = iter(["I will call the tool now", {"tool": "secret_code", "arguments": {"wrd": "x"}}])
    server = fake_llm(script=[("not usable", lambda body: react({"messages": [body["messages"][-3]]})),
                              (".", lambda body: next(replies, None) or react(body))])
    result = await synthloom.arun(write_graph(agent_graph(server), [{"topic": "t", "word": "fig"}]),
                                  tmp_path / "out")
    record = lines(result.path("raw"))[0]
    assert record["answer"] == f"The code is {hashlib.sha256(b'fig').hexdigest()[:10]}."
    assert TOOL_CALLS == ["fig"]  # the call with a wrong argument name never reached the tool
    assert server.requests == 4  # two usable replies, each after one the model was asked to redo


async def test_agent_that_never_answers_fails_at_max_steps(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    TOOL_CALLS.clear()
    server = fake_llm(script=[(".", {"tool": "secret_code", "arguments": {"word": "loop"}})])
    result = await synthloom.arun(write_graph(agent_graph(server, max_steps=2), [{"topic": "t", "word": "w"}]),
                                  tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert failed[0]["node"] == "solve" and "did not answer within max_steps (2 tool calls)" in failed[0]["message"]
    assert len(TOOL_CALLS) <= 2 and result.manifest["counts"]["written"] == 0


def test_agent_tool_mistakes_are_config_errors(fake_llm: Callable[..., FakeOpenAI],
                                               write_graph: Callable[..., Path]) -> None:
    server = fake_llm()
    with pytest.raises(synthloom.ConfigError, match=r"nodes\.solve\.tools\.1: module 'tests.test_nodes_agent' "
                                                    r"has no 'nope'"):
        synthloom.load(write_graph(agent_graph(server, tools=["tests.test_nodes_agent:shout",
                                                              "tests.test_nodes_agent:nope"]), [{"word": "w"}]))
    with pytest.raises(synthloom.ConfigError, match="reads word"):
        synthloom.load(write_graph(agent_graph(server), [{"topic": "t"}]))


class Pipeline(TypedDict, total=False):
    text: str
    words: int
    loud: str


def _count(state: Pipeline) -> Pipeline:
    return {"words": len(state["text"].split())}


def _louder(state: Pipeline) -> Pipeline:
    return {"loud": state["text"].upper() + "!" * state["words"]}


def _build() -> Any:
    builder = StateGraph(Pipeline)
    builder.add_node("count", _count)
    builder.add_node("louder", _louder)
    builder.add_edge(START, "count")
    builder.add_edge("count", "louder")
    builder.add_edge("louder", END)
    return builder


app = _build().compile()
builder = _build()


@pytest.mark.parametrize("target", ["app", "builder"])
async def test_langgraph_app_runs_with_state_mapped_in_and_out(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path, target: str) -> None:
    server = fake_llm(script=[(".", "two words")])
    spec = {
        "name": "lg",
        "models": {"w": model_spec(server)},
        "nodes": {
            "answer": {"type": "llm", "model": "w", "output": "answer",
                       "messages": [{"role": "user", "content": "{{ topic }}"}]},
            "app": {"type": "langgraph", "graph": f"tests.test_nodes_agent:{target}",
                    "inputs": {"text": "answer"}, "outputs": {"shouted": "loud", "count": "words"}},
            "after": {"type": "llm", "model": "w", "output": "echo",
                      "messages": [{"role": "user", "content": "{{ shouted }}"}]},
        },
        "edges": [["answer", "app"], ["app", "after"]],
        "outputs": [{"name": "raw", "format": "raw"}],
    }
    result = await synthloom.arun(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    record = lines(result.path("raw"))[0]
    assert record["shouted"] == "TWO WORDS!!" and record["count"] == 2
    assert server.bodies[-1]["messages"][0]["content"] == "TWO WORDS!!"


def test_langgraph_node_refuses_what_is_not_a_graph(fake_llm: Callable[..., FakeOpenAI],
                                                    write_graph: Callable[..., Path]) -> None:
    spec = {"name": "lg", "nodes": {"app": {"type": "langgraph", "graph": "tests.test_nodes_agent:secret_code",
                                            "inputs": {"text": "topic"}, "outputs": {"x": "y"}}}}
    with pytest.raises(synthloom.ConfigError, match="is not a LangGraph graph"):
        synthloom.load(write_graph(spec, [{"topic": "t"}]))

"""The `conversation` node: roles with their own models take turns, each seeing the dialogue from its own
seat, until max_turns, a stop condition or a stop phrase."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines

SIM_SYSTEM = "You are a curious student asking about {{ topic }}."
BOT_SYSTEM = "You are a patient tutor."


def numbered(prefix: str) -> Callable[[dict[str, Any]], str]:
    """Replies `<prefix> 1`, `<prefix> 2`, ... counting the speaker's own earlier turns in the request."""
    def reply(body: dict[str, Any]) -> str:
        own = sum(1 for message in body["messages"] if message["role"] == "assistant")
        return f"{prefix} {own + 1}"
    return reply


def dialogue_graph(sim: FakeOpenAI, bot: FakeOpenAI, **conversation: Any) -> dict[str, Any]:
    return {
        "name": "dialogue",
        "models": {"sim": model_spec(sim), "bot": model_spec(bot)},
        "nodes": {"chat": {"type": "conversation", "opening": "Tell me about {{ topic }}.",
                           "roles": [{"name": "student", "model": "sim", "system": SIM_SYSTEM, "as": "user"},
                                     {"name": "tutor", "model": "bot", "system": BOT_SYSTEM, "as": "assistant"}],
                           **conversation}},
        "outputs": [{"name": "sft", "format": "sft", "messages_from": "messages"}, {"name": "raw", "format": "raw"}],
    }


async def test_roles_alternate_up_to_max_turns_each_from_its_own_seat(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    sim, bot = fake_llm(script=[(".", numbered("question"))]), fake_llm(script=[(".", numbered("answer"))])
    spec = dialogue_graph(sim, bot, max_turns=5)
    result = await synthloom.arun(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    sft = lines(result.path("sft"))
    assert sft[0]["messages"] == [
        {"role": "user", "content": "Tell me about tides."}, {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "question 2"}, {"role": "assistant", "content": "answer 2"},
        {"role": "user", "content": "question 3"}]  # the opening was the student's own first turn
    raw = lines(result.path("raw"))[0]
    assert [entry["speaker"] for entry in raw["messages_transcript"]] == ["student", "tutor"] * 2 + ["student"]
    assert bot.requests == 2 and sim.requests == 2  # each role called its own model
    # the student's last request: its own system prompt, its turns as assistant, the tutor's as user
    assert sim.bodies[-1]["messages"] == [
        {"role": "system", "content": "You are a curious student asking about tides."},
        {"role": "assistant", "content": "Tell me about tides."}, {"role": "user", "content": "answer 1"},
        {"role": "assistant", "content": "question 2"}, {"role": "user", "content": "answer 2"}]
    assert bot.bodies[0]["messages"] == [{"role": "system", "content": BOT_SYSTEM},
                                         {"role": "user", "content": "Tell me about tides."}]


async def test_stop_when_ends_the_dialogue(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                                          tmp_path: Path) -> None:
    sim, bot = fake_llm(script=[(".", "Thanks, goodbye")]), fake_llm(script=[(".", numbered("answer"))])
    spec = dialogue_graph(sim, bot, max_turns=12, stop_when="'goodbye' in last or turn >= limit")
    seeds = [{"topic": "tides", "limit": 20}, {"topic": "stars", "limit": 2}]
    result = await synthloom.arun(write_graph(spec, seeds), tmp_path / "out")
    by_topic = {record["topic"]: record["messages"] for record in lines(result.path("raw"))}
    assert [m["content"] for m in by_topic["tides"]] == ["Tell me about tides.", "answer 1", "Thanks, goodbye"]
    assert [m["content"] for m in by_topic["stars"]] == ["Tell me about stars.", "answer 1"]


async def test_stop_phrase_is_cut_and_ends_the_dialogue(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    sim = fake_llm(script=[("answer 1", "One more question?"), (".", "[DONE]")])
    bot = fake_llm(script=[(".", numbered("answer"))])
    spec = dialogue_graph(sim, bot, max_turns=12, stop_phrases=["[DONE]"])
    result = await synthloom.arun(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    messages = lines(result.path("raw"))[0]["messages"]
    assert [m["content"] for m in messages] == ["Tell me about tides.", "answer 1", "One more question?",
                                                "answer 2"]  # the bare stop phrase is left out
    assert sim.requests == 2 and bot.requests == 2


async def test_three_roles_take_turns_and_see_each_other_by_name(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", lambda body: body["messages"][0]["content"].split()[-1])])
    roles = [{"name": name, "model": "w", "system": f"You are the {name}"} for name in ("author", "critic", "editor")]
    spec = {"name": "panel", "models": {"w": model_spec(server)},
            "nodes": {"talk": {"type": "conversation", "roles": roles, "opening": "Draft: {{ topic }}",
                               "max_turns": 4, "output": "dialogue"}}}
    result = await synthloom.arun(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    record = lines(result.path("records"))[0]
    assert [(m["role"], m["content"]) for m in record["dialogue"]] == [
        ("user", "Draft: tides"), ("assistant", "critic"), ("assistant", "editor"), ("user", "author")]
    author_view = server.bodies[-1]["messages"]
    assert author_view == [{"role": "system", "content": "You are the author"},
                           {"role": "assistant", "content": "Draft: tides"},
                           {"role": "user", "content": "critic: critic\n\neditor: editor"}]


def test_conversation_mistakes_are_config_errors(fake_llm: Callable[..., FakeOpenAI],
                                                 write_graph: Callable[..., Path]) -> None:
    sim = fake_llm()
    spec = dialogue_graph(sim, sim)
    spec["nodes"]["chat"]["roles"][1]["name"] = "student"
    with pytest.raises(synthloom.ConfigError, match="'student' is named twice"):
        synthloom.load(write_graph(spec, [{"topic": "t"}]))
    spec = dialogue_graph(sim, sim)
    spec["nodes"]["chat"]["roles"] = spec["nodes"]["chat"]["roles"][:1]
    with pytest.raises(synthloom.ConfigError, match=r"nodes\.chat\.roles"):
        synthloom.load(write_graph(spec, [{"topic": "t"}]))
    spec = dialogue_graph(sim, sim, stop_when="len(last) > cutoff")
    with pytest.raises(synthloom.ConfigError, match="reads cutoff"):
        synthloom.load(write_graph(spec, [{"topic": "t"}]))


@pytest.mark.embedded
@pytest.mark.timeout(900)  # eight real-model calls: a busy 2-core machine may take minutes, which is no failure
async def test_embedded_model_drives_a_critic_loop_and_a_conversation(write_graph: Callable[..., Path],
                                                                      tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="needs the 'local' extra")
    short = {"max_tokens": 32, "temperature": 0.0}
    spec = {
        "name": "embedded-e2e",
        "models": {"default": {"backend": "local", "params": {"repeat_penalty": 1.1}}},
        "nodes": {
            "answer": {"type": "llm", "output": "answer", "params": short,
                       "messages": [{"role": "system", "content": "Answer in one sentence."},
                                    {"role": "user", "content": "What is {{ topic }}?"}]},
            "review": {"type": "critic", "field": "answer", "criteria": ["accuracy"],
                       "pass_score": 11,  # above the scale: the loop always refines, up to max_visits
                       "params": {"max_tokens": 64, "temperature": 0.0}},
            "refine": {"type": "llm", "output": "answer", "params": short,
                       "messages": [{"role": "user", "content": "Improve this answer: {{ answer }}"}]},
            "chat": {"type": "conversation", "opening": "{{ answer }}", "max_turns": 3, "params": short,
                     "roles": [{"name": "student", "system": "Ask one short follow-up question."},
                               {"name": "teacher", "system": "Answer briefly."}]},
        },
        "edges": [["answer", "review"], {"from": "review", "to": "refine", "when": "not review.passed",
                                         "max_visits": 1},
                  ["refine", "review"], {"from": "review", "to": "chat", "when": "len(review_history) > 1"}],
        "outputs": [{"name": "raw", "format": "raw"}],
    }
    result = await synthloom.arun(write_graph(spec, [{"topic": "the moon"}]), tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert not failed, failed
    record = lines(result.path("raw"))[0]
    assert len(record["review_history"]) == 2 and record["review_history"][1]["draft"] == record["answer"]
    assert all(1 <= entry["score"] <= 10 for entry in record["review_history"])
    assert record["messages"][0]["content"] == record["answer"]  # the opening: the refined answer
    roles = [message["role"] for message in record["messages"]]
    assert roles == ["user", "assistant", "user"][:len(roles)] and len(roles) >= 2
    assert all(message["content"].strip() for message in record["messages"])
    assert result.manifest["nodes"]["chat"]["llm"]["calls"] == len(roles) - 1

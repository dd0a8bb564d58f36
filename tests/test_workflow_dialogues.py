"""The `dialogues` workflow (DiaSynth) end to end against the fixture server: subtopics, a distinct persona
pair drawn in code, the checklist, a two-seat conversation, a summary and the four-aspect judge; a dialogue
that dies early is filtered out and one the judge fails reaches only the raw output."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import synthloom

from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines

ROOT = Path(__file__).resolve().parent.parent
GRAPH = ROOT / "graphs" / "dialogues.yaml"
DATA = ROOT / "graphs" / "data"
PERSONAS = [line.strip() for line in (DATA / "personas.txt").read_text().splitlines() if line.strip()]
TOPICS = {row["id"]: row["topic"] for row in map(json.loads, (DATA / "dialogue_topics.jsonl").read_text().splitlines())}
ASPECTS = {"engagingness", "naturalness", "coherence", "groundedness"}
SHORT, DULL, LONG = "job-interview", "moving-city", "planning-a-wedding"  # topic ids with a scripted fate


def plan(topic_id: str) -> dict[str, Any]:
    return {"familiarity": "friends", "emotion_a": "worried", "emotion_b": "calm", "formality": "casual",
            "turns": 6 if topic_id == LONG else 4, "medium": "face to face", "location": "in a cafe",
            "focus": "what to do first", "agreement": "partly agree", "fillers": "a few"}


def topic_id_in(text: str) -> str:
    """The seed topic a request is about: the subtopics carry its id ("costs of <id>")."""
    return next(topic_id for topic_id in TOPICS if f"of {topic_id}" in text)


def reply(body: dict[str, Any]) -> Any:
    messages = body["messages"]
    system, last = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You list"):
        topic = last.split("Topic: ")[1].splitlines()[0]
        topic_id = next(key for key, value in TOPICS.items() if value == topic)
        return {"subtopics": [topic, f"costs of {topic_id}", f"first steps of {topic_id}"]}
    if system.startswith("You plan"):
        return plan(topic_id_in(last))
    if system.startswith("You summarise"):
        return "Two people talk it through and agree on a first step."
    if system.startswith("You are a strict reviewer"):
        low = topic_id_in(last) == DULL
        return {"feedback": "Flat." if low else "Lively.",
                "scores": {aspect: 1 if low else 3 for aspect in ASPECTS}}
    if system.startswith("You are "):  # a speaker's seat: the opener, then the conversation's turns
        persona = system.removeprefix("You are ").split(". You are talking")[0]
        if last == "Start the conversation with your first line.":
            return f"Hi, it's me, {persona}. Got a minute?"
        if topic_id_in(system) == SHORT:
            return ""  # the other side never answers: a one-line dialogue
        spoken = sum(message["role"] == "assistant" for message in messages)
        return f"Line {spoken + 1} from {persona}, still on it. And one more thing"
    raise AssertionError(f"unexpected request: {system[:60]}")


async def test_dialogues_from_topic_to_judged_chat_and_summary(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="default", script=[(".", reply)])
    # no cache: the scripted dialogues repeat, and the test counts what reaches the server
    result = await synthloom.arun(synthloom.load(GRAPH, endpoint=server.url), tmp_path / "out", use_cache=False)

    counts = result.manifest["counts"]
    assert counts["seeded"] == 10 and counts["written"] == 9 and counts["failed"] == 0
    assert counts["drop_reasons"] == {"long_enough: dialogue shorter than 4 turns": 1}
    assert lines(tmp_path / "out" / "dropped.jsonl")[0]["id"] == SHORT
    assert counts["outputs"] == {"chat": 8, "summarise": 8, "raw": 9}  # the failed judge: raw only

    raw = {record["id"]: record for record in lines(result.path("raw"))}
    for topic_id, record in raw.items():
        assert record["subtopic"] in (f"costs of {topic_id}", f"first steps of {topic_id}")  # never the topic
        assert record["speaker_a"] != record["speaker_b"]
        assert {record["speaker_a"], record["speaker_b"]} <= set(PERSONAS)
        assert set(record["review"]["scores"]) == ASPECTS
        assert record["metadata"]["passed"] == (topic_id != DULL)
        turns = plan(topic_id)["turns"]
        assert record["turns"] == turns
        assert [line[:2] for line in record["dialogue_text"].splitlines()] == ["A:", "B:"] * (turns // 2)
        # a line cut off mid-sentence keeps its whole sentences only
        assert record["dialogue_text"].splitlines()[1].endswith(", still on it.")
    assert len({(r["speaker_a"], r["speaker_b"]) for r in raw.values()}) >= 5  # pairs vary by record

    chats = lines(result.path("chat"))
    assert {record["metadata"]["id"] for record in chats} == set(raw) - {DULL}
    for record in chats:
        state, messages = raw[record["metadata"]["id"]], record["messages"]
        assert messages[0] == {"role": "system", "content": state["system_b"]}
        assert messages[0]["content"].startswith(f"You are {state['speaker_b']}. You are talking with "
                                                 f"{state['speaker_a']}; you are friends. The conversation is "
                                                 f"face to face in a cafe, about {state['subtopic']}, in particular "
                                                 f"what to do first. You feel calm.")  # the checklist, applied
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * (state["turns"] // 2)
        assert messages[1]["content"] == f"Hi, it's me, {state['speaker_a']}. Got a minute?"
        assert set(record["metadata"]["scores"]) == ASPECTS and record["metadata"]["score"] == 3
        assert record["metadata"]["plan"]["turns"] == state["turns"]

    for record in lines(result.path("summarise")):
        state = raw[record["metadata"]["id"]]
        user, assistant = record["messages"]
        assert user["role"] == "user" and user["content"].startswith(state["dialogue_text"] + "\n\nSummarise")
        assert assistant == {"role": "assistant", "content": state["summary"]}
        assert record["metadata"]["speaker_a"] == state["speaker_a"]

    summaries = [body for body in server.bodies if body["messages"][0]["content"].startswith("You summarise")]
    assert len(summaries) == 9 and all(body["temperature"] == 0.3 for body in summaries)
    assert all(re.search(r"Subject: (costs|first steps) of", body["messages"][-1]["content"])
               for body in server.bodies if body["messages"][0]["content"].startswith("You are a strict"))

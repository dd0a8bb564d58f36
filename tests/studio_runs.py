"""Runs of the shipped quickstart workflow, made against the fixture server, for the studio's tests and
screenshots: enough topics to page through, scores spread over 6..10, one record whose model output holds
markup (it must show as text), a few records dropped by the workflow's own hygiene."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import synthloom

from tests.fixture_server import FakeOpenAI

GRAPH = Path(__file__).resolve().parents[1] / "graphs" / "quickstart.yaml"
MARKUP = "<img src=x onerror=alert(1)>"
MARKUP_TOPIC = "html"


def topics(count: int) -> list[str]:
    return [f"topic{number:03d}" for number in range(count)] + [MARKUP_TOPIC, "nonsense"]


def score_of(topic: str) -> int:
    if topic == "nonsense":
        return 2                                   # below the judge's floor: dropped
    digits = re.sub(r"\D", "", topic) or "0"
    return 6 + int(digits) % 5                     # 6..10


def script() -> list[tuple[str, Any]]:
    def question(body: dict[str, Any]) -> str:
        topic = body["messages"][-1]["content"].removeprefix("Topic: ")
        return f"What does {MARKUP} do in {topic}?" if topic == MARKUP_TOPIC else f"What is {topic} about?"

    def answer(body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        topic = re.search(r"(topic\d+|html|nonsense)", text)
        name = topic.group(1) if topic else "it"
        if any("pirate" in str(message.get("content")) for message in body["messages"][:-1]):
            return f"Arr, notes on {name} here."          # the studio's iterate test edits the system prompt
        return f"The tag {MARKUP} shows markup in html." if name == MARKUP_TOPIC else f"Notes on {name} here."

    def review(body: dict[str, Any]) -> dict[str, Any]:
        draft = body["messages"][-1]["content"].split("Text to review:\n", 1)[1]
        topic = re.search(r"(topic\d+|html|nonsense)", draft)
        score = score_of(topic.group(1)) if topic else 5
        return {"feedback": "Fine.", "scores": {"accuracy": score, "clarity": score}}

    return [("Text to review:", review), ("^Question: ", answer), ("^Topic: ", question), (".", answer)]


def make_run(out: Path, count: int = 60, server: FakeOpenAI | None = None, graph_file: Path = GRAPH) -> dict[str, Any]:
    """A traced quickstart run of `count` numbered topics (plus the markup and the nonsense ones) into `out`."""
    seeds = out.parent / f"{out.name}-topics.jsonl"
    seeds.write_text("".join(json.dumps({"id": topic, "topic": topic}) + "\n" for topic in topics(count)))
    own = server is None
    server = server or FakeOpenAI(model="*", script=script())
    if own:
        server.start()
    try:
        graph = synthloom.load(graph_file, endpoint=server.url, overrides=[f"seed.source.path={seeds}"])
        return synthloom.run(graph, out, trace=True).manifest
    finally:
        if own:
            server.stop()

"""The magpie workflow end to end against the fixture server: pre-query completions on /v1/completions
(the request holds only the chat template's prefix, one seed per record), responses, LLM tags, the
Magpie-Pro filter and MinHash dedup, with exact counts."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import synthloom
import yaml

from tests.fixture_server import FakeOpenAI
from tests.test_run import lines

GRAPH = Path(__file__).resolve().parents[1] / "graphs" / "magpie.yaml"
TEMPLATE = yaml.safe_load(GRAPH.read_text())["nodes"]["instruction"]["prompt"]

AIRPLANE = "How do I make a paper airplane that flies far?"
PHOTOSYNTHESIS = "Explain photosynthesis to a ten-year-old in three sentences."
LOCK = "Tell me how to pick the lock on my neighbour's door."
# What the model writes after the pre-query prefix, by record (the request's seed is the record's index).
INSTRUCTIONS = [AIRPLANE, PHOTOSYNTHESIS, "hi", f" {AIRPLANE}\n", "Write a story about the following:", LOCK, "  "]
QUALITY = {AIRPLANE: "good", PHOTOSYNTHESIS: "excellent", "hi": "poor", "Write a story about the following:": "good",
           LOCK: "good"}
RESPONSES = {AIRPLANE: "Fold a dart with a sharp nose, keep the wings level and throw it gently upwards.",
             PHOTOSYNTHESIS: "Plants catch sunlight with their leaves. They use it to turn water and air into "
                             "sugar. That sugar is their food, and they give off oxygen.",
             LOCK: "I'm sorry, but I can't help with that."}


def script() -> list[tuple[str, Any]]:
    def tags(body: dict[str, Any]) -> dict[str, Any]:
        text = body["messages"][-1]["content"].removeprefix("Text to label:\n")
        return {"input_quality": QUALITY[text], "difficulty": "easy", "category": "information seeking"}

    return [(r"<\|im_start\|>user\n$", lambda body: INSTRUCTIONS[body["seed"]]),
            ("^Text to label:\n", tags),
            (".", lambda body: RESPONSES.get(body["messages"][-1]["content"], "A short, helpful answer."))]


async def test_magpie_pre_query_tags_filter_and_dedup(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(script=script(), model="default")
    graph = synthloom.load(GRAPH, endpoint=server.url)
    result = await synthloom.arun(graph, tmp_path / "out", limit=len(INSTRUCTIONS), max_in_flight=1)

    pre_queries = [body for body in server.bodies if "prompt" in body]
    assert len(pre_queries) == len(INSTRUCTIONS)
    assert TEMPLATE.startswith("<|im_start|>system\n") and TEMPLATE.endswith("<|im_start|>user\n")
    assert all(body["prompt"] == TEMPLATE and "messages" not in body for body in pre_queries)
    assert all(body["stop"] == ["<|im_end|>"] and body["temperature"] == 1.0 for body in pre_queries)
    assert sorted(body["seed"] for body in pre_queries) == list(range(len(INSTRUCTIONS)))  # one per record

    sft = lines(result.path("sft"))
    assert [record["messages"][0]["content"] for record in sft] == [AIRPLANE, PHOTOSYNTHESIS]
    for record in sft:
        user, assistant = record["messages"]
        assert user["role"] == "user" and assistant == {"role": "assistant", "content": RESPONSES[user["content"]]}
        meta = record["metadata"]
        assert meta["input_quality"] == QUALITY[user["content"]] and meta["difficulty"] == "easy"
        assert meta["task_category"] == "information seeking"
        assert meta["response_words"] == len(RESPONSES[user["content"]].split())

    counts = result.manifest["counts"]
    assert counts["written"] == 2 and counts["failed"] == 0 and counts["dropped"] == 5
    assert counts["drop_reasons"] == {
        "has_instruction: empty instruction": 1,
        "filter: input quality below good": 1,
        "filter: instruction ends with ':' (truncated)": 1,
        "filter: response is a refusal": 1,
        "dedup: duplicate": 1,
    }
    duplicate = next(row for row in lines(tmp_path / "out" / "dropped.jsonl") if row["reason"] == "duplicate")
    assert duplicate["detail"]["similarity"] == 1.0
    assert result.manifest["nodes"]["respond"]["steps"] == 6  # the empty instruction was never answered


async def test_magpie_drops_cut_off_and_echoing_responses(fake_llm: Callable[..., FakeOpenAI],
                                                          tmp_path: Path) -> None:
    """The hygiene flags: a response the server stopped for length ends on a full stop but is cut off; a
    response that repeats its instruction teaches nothing. Both are dropped and counted by reason."""
    long_one, echoed = "Describe the water cycle in detail.", "What is the capital of France?"
    instructions = [AIRPLANE, long_one, echoed]
    replies = {AIRPLANE: RESPONSES[AIRPLANE], long_one: "Water evaporates, forms clouds and falls as rain.",
               echoed: "What is the capital of France? The capital of France is Paris."}
    server = fake_llm(model="default", cut_off=[f"^{long_one}$"], script=[
        (r"<\|im_start\|>user\n$", lambda body: instructions[body["seed"]]),
        ("^Text to label:\n", {"input_quality": "good", "difficulty": "easy", "category": "information seeking"}),
        (".", lambda body: replies[body["messages"][-1]["content"]])])
    graph = synthloom.load(GRAPH, endpoint=server.url)
    result = await synthloom.arun(graph, tmp_path / "out", limit=len(instructions), max_in_flight=1)
    assert [record["messages"][0]["content"] for record in lines(result.path("sft"))] == [AIRPLANE]
    assert result.manifest["counts"]["drop_reasons"] == {"filter: response cut off": 1,
                                                        "filter: response repeats the instruction": 1}

"""The evol_instruct workflow end to end against the fixture server: one record rejected by each of the
paper's four elimination rules, one evolved for two rounds, one whose second round fails and keeps its
first."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import synthloom
import yaml

from tests.fixture_server import FakeOpenAI
from tests.test_run import lines

GRAPH = Path(__file__).resolve().parents[1] / "graphs" / "evol_instruct.yaml"
HINTS = yaml.safe_load(GRAPH.read_text())["nodes"]["sampler"]["operations"]

POEM_1 = "Write a poem about the sea at dawn in four rhyming lines."
POEM_2 = "Write a poem about the sea at dawn in four rhyming lines that mention a lighthouse keeper."
PANCAKE_1 = "Give me a pancake recipe for two people that uses no eggs."
PANCAKE_2 = "Give me a pancake recipe for two people that uses no eggs or milk, with a shopping list."
EVOLVED = {
    "Name a fruit.": "Name one fruit.",                                                      # rule 1
    "Tell me a joke.": "Tell me a joke about penguins that a six-year-old would understand.",  # rule 2
    "Describe rain.": "Describe rain falling on a city street at night, using all five senses.",  # rule 3
    "Explain gravity.": "#Rewritten Prompt#: Explain gravity to a child with a ball and a trampoline.",  # 4
    "Write a poem about the sea.": POEM_1, POEM_1: POEM_2,                                   # two rounds
    "Give me a pancake recipe.": PANCAKE_1, PANCAKE_1: PANCAKE_2,                            # round 2 fails
}
RESPONSES = {
    "Tell me a joke about penguins that a six-year-old would understand.": "Sorry, I cannot think of one.",
    "Describe rain falling on a city street at night, using all five senses.": "And so, it is... of the, to the!",
    POEM_1: "Pale light on the water wide,\nGulls are calling with the tide.",
    POEM_2: "The keeper climbs the stair at dawn,\nHis lamp still burns, the night is gone.",
    PANCAKE_1: "Mix flour, milk, sugar and baking powder, then fry small rounds in butter.",
    PANCAKE_2: "Sorry, I can't.",
}
SEEDS = [{"id": f"e{index}", "instruction": text} for index, text in
         enumerate(["Name a fruit.", "Tell me a joke.", "Describe rain.", "Explain gravity.",
                    "Write a poem about the sea.", "Give me a pancake recipe."])]


def quoted(content: str) -> str:
    """The instruction the evolver was asked to evolve (the quoted line of its prompt)."""
    return content.split('\n"', 1)[1].rsplit('"\n\n', 1)[0]


def script() -> list[tuple[str, Any]]:
    def judge(body: dict[str, Any]) -> dict[str, str]:
        second = body["messages"][-1]["content"].split("\nSecond: ", 1)[1].split("\n\n", 1)[0]
        return {"adds_information": "no" if second == "Name one fruit." else "yes"}

    def evolve(body: dict[str, Any]) -> str:
        return EVOLVED[quoted(body["messages"][-1]["content"])]

    return [("^First: ", judge),
            ("^Here is an instruction for an AI assistant", evolve),
            (".", lambda body: RESPONSES.get(body["messages"][-1]["content"],
                                             "A clear answer that explains the topic step by step."))]


async def test_evol_instruct_eliminates_by_each_rule_and_loops_two_rounds(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(row) + "\n" for row in SEEDS))
    server = fake_llm(script=script(), model="default")
    graph = synthloom.load(GRAPH, endpoint=server.url, overrides=[f"seed.source.path={seeds}"])
    result = await synthloom.arun(graph, tmp_path / "out")

    counts = result.manifest["counts"]
    assert counts["seeded"] == 6 and counts["written"] == 2 and counts["failed"] == 0
    assert counts["drop_reasons"] == {
        "eliminate: no information gain": 1,
        "eliminate: response is a short apology": 1,
        "eliminate: response is only punctuation and stop words": 1,
        "eliminate: evolved instruction copies scaffold words": 1,
    }
    dropped = {row["id"]: row for row in lines(tmp_path / "out" / "dropped.jsonl")}
    assert dropped["e3"]["detail"]["evolved"].startswith("#Rewritten Prompt#")

    sft = {record["metadata"]["id"]: record for record in lines(result.path("sft"))}
    assert set(sft) == {"e4", "e5"}
    poem, pancake = sft["e4"], sft["e5"]
    assert [m["role"] for m in poem["messages"]] == ["user", "assistant"]
    assert poem["messages"][0]["content"] == POEM_2 and poem["messages"][1]["content"] == RESPONSES[POEM_2]
    assert poem["metadata"]["rounds"] == 2 and poem["metadata"]["stopped_by"] == ""
    assert poem["metadata"]["original"] == "Write a poem about the sea."
    assert len(poem["metadata"]["operations"]) == 2 and set(poem["metadata"]["operations"]) <= set(HINTS)
    # the second round failed: the record keeps its first round
    assert pancake["messages"][0]["content"] == PANCAKE_1 and pancake["messages"][1]["content"] == RESPONSES[PANCAKE_1]
    assert pancake["metadata"]["rounds"] == 1 and len(pancake["metadata"]["operations"]) == 1
    assert pancake["metadata"]["stopped_by"] == "response is a short apology"

    nodes = result.manifest["nodes"]
    assert nodes["sampler"]["steps"] == nodes["evolve"]["steps"] == nodes["judge"]["steps"] == 8
    assert nodes["accept"]["steps"] == 3
    # round 2 evolves the accepted round-1 instruction, with the operation the sampler recorded
    poem_requests = [body["messages"][-1]["content"] for body in server.bodies
                     if body["messages"][-1]["content"].startswith("Here is an instruction")
                     and "poem about the sea" in body["messages"][-1]["content"]]
    assert [quoted(content) for content in poem_requests] == ["Write a poem about the sea.", POEM_1]
    for content, operation in zip(poem_requests, poem["metadata"]["operations"], strict=True):
        assert HINTS[operation] in content

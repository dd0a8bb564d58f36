"""The weak/strong DPO workflow (graphs/dpo_weak_strong.yaml) end to end against the fixture server: the
strong and weak models told apart by their model names, the weak model's four samples scripted by their
seed, the verifier reading final numbers, and pairs only where a question got both a right and a wrong
sample."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom_graphs.dpo_weak_strong import final_number

from tests.fixture_server import FakeOpenAI

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"
QUESTIONS = [json.loads(line) for line in
             (GRAPHS / "data" / "weak_strong_questions.jsonl").read_text().splitlines()][:6]
GOLD = {row["question"]: row["answer"] for row in QUESTIONS}
ID = {row["question"]: row["id"] for row in QUESTIONS}

# the weak model's samples 0-3 per question (the graph sends seed 0 + sample index)
WEAK = {
    # two right, two wrong: one pair (best_worst: the first right sample against the last wrong one)
    "easy-01": ["5 + 3 = 8. Answer: 8", "5 - 3 = 2. Answer: 2", "5 * 3 = 15. Answer: 15", "He has 8 apples."],
    # every sample right: nothing to prefer
    "easy-02": ["6 * 2 = 12. Answer: 12", "Two boxes hold 12 eggs.", "Answer: 12", "#### 12"],
    # every sample wrong: nothing to prefer either
    "easy-03": ["20 + 7 = 27. Answer: 27", "Answer: 14", "She has 7 left.", "I am not sure."],
    # one right in another format; the wrong ones all repeat one text
    "easy-04": ["4 * 2 = 8. Answer: $8.00", "Answer: 6", "Answer: 6", "answer: 6"],
    # the gold number appears mid-way, but the final answer is what counts
    "easy-05": ["Answer: 9", "The answer is 20.", "Answer: 9", "4 * 5 = 20, plus 5 spare. Answer: 25"],
    # a hard one the weak model never gets
    "math-01": ["24 * 7 = 168. Answer: 168", "Answer: 183", "Answer: 9", "Answer: 168"],
}
STRONG = {"easy-01": "5 + 3 = 8.\nAnswer: 8", "easy-02": "6 * 2 = 12.\nAnswer: 12",
          "easy-03": "20 + 7 = 27.\nAnswer: 27", "easy-04": "4 * 2 = 8.\nAnswer: 8",
          "easy-05": "4 * 5 = 20.\nAnswer: 20", "math-01": "24 * 7 = 168, 168 - 15 = 153.\nAnswer: 153"}
PAIRS = {"easy-01": ("5 + 3 = 8. Answer: 8", "5 * 3 = 15. Answer: 15"),
         "easy-04": ("4 * 2 = 8. Answer: $8.00", "Answer: 6"),
         "easy-05": ("The answer is 20.", "4 * 5 = 20, plus 5 spare. Answer: 25")}


def two_models(body: dict[str, Any]) -> str:
    question = body["messages"][-1]["content"]
    if body["model"] == "big-teacher":
        assert body["temperature"] == 0.0
        return STRONG[ID[question]]
    assert body["model"] == "small-student" and body["temperature"] == 0.7
    return WEAK[ID[question]][body["seed"]]


async def test_pairs_only_where_weak_samples_disagree(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*", script=[(".", two_models)])
    graph = synthloom.load(GRAPHS / "dpo_weak_strong.yaml", endpoint=server.url,
                           overrides=["models.strong.model=big-teacher", "models.weak.model=small-student"])
    result = await synthloom.arun(graph, tmp_path / "out", limit=6)
    assert result.manifest["status"] == "completed"
    models = [body["model"] for body in server.bodies]
    assert models.count("big-teacher") == 6 and models.count("small-student") == 24
    seeds = sorted(body["seed"] for body in server.bodies if body["model"] == "small-student")
    assert seeds == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6

    dpo = list(result.records("dpo"))
    assert {record["metadata"]["id"]: (record["chosen"][0]["content"], record["rejected"][0]["content"])
            for record in dpo} == PAIRS
    for record in dpo:
        question = record["prompt"][0]["content"]
        assert record["prompt"] == [{"role": "user", "content": question}]
        assert [m["role"] for m in record["chosen"] + record["rejected"]] == ["assistant", "assistant"]
        assert record["chosen"] != record["rejected"]
        assert final_number(record["chosen"][0]["content"]) == GOLD[question]
        assert final_number(record["rejected"][0]["content"]) != GOLD[question]
        assert record["metadata"]["chosen_score"] == 1.0 and record["metadata"]["rejected_score"] == 0.0
        assert record["metadata"]["gold"] == GOLD[question] and record["metadata"]["weak_samples"] == 4

    sft = list(result.records("sft"))  # only the strong answers the verifier accepts
    assert {record["metadata"]["id"] for record in sft} == {"easy-01", "easy-02", "easy-04", "easy-05", "math-01"}
    for record in sft:
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert record["messages"][1]["content"] == STRONG[record["metadata"]["id"]]

    raw = {record["id"]: record for record in result.records("raw")}
    assert len(raw) == 6
    assert {key: record["metadata"]["pair_yield"] for key, record in raw.items()} == \
        {"easy-01": True, "easy-02": False, "easy-03": False, "easy-04": True, "easy-05": True, "math-01": False}
    assert {key: record["metadata"]["weak_correct"] for key, record in raw.items()} == \
        {"easy-01": 2, "easy-02": 4, "easy-03": 0, "easy-04": 1, "easy-05": 1, "math-01": 0}
    assert raw["easy-03"]["metadata"]["strong_correct"] is False and raw["easy-03"]["pairs"] == []
    assert result.manifest["counts"]["outputs"] == {"sft": 5, "dpo": 3, "raw": 6}


@pytest.mark.parametrize(("text", "number"), [
    ("Answer: 8", 8), ("The answer is: 2,205.", 2205), ("so 3 * 4 = 12.\n#### 12\nThe answer is \"7\"", 7),
    ("Answer: **-4**", -4), ("It travels 200 km in 2.5 hours", 2.5), ("no number here", None),
])
def test_final_number(text: str, number: float | None) -> None:
    assert final_number(text) == number

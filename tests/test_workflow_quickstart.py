"""The quickstart workflow against the fixture server: its hygiene drops non-questions, echoing answers and
answers about something else, a revision that is cut off or off topic is never reviewed (so never written),
the SFT record keeps the best-scored draft, a record whose best draft the judge scored below 6 of 10 is
dropped, and a DPO pair is made only where the judge's margin is at least 2."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import synthloom

from tests.fixture_server import FakeOpenAI
from tests.test_run import lines

GRAPH = Path(__file__).resolve().parents[1] / "graphs" / "quickstart.yaml"

QUESTIONS = {"ice": "Why does ice float?", "rain": "What is rain?", "tides": "How do tides work?",
             "stars": "What is a star?", "clouds": "Clouds are white.", "sky": "Why is the sky blue?",
             "moon": "What is the Moon made of?", "wind": "What makes wind blow?",
             "sand": "Where does sand come from?"}
ANSWERS = {"Why does ice float?": "Ice is less dense than water.",
           "What is rain?": "Rain is water falling from clouds.",
           "How do tides work?": "Tides come from the Moon pulling the oceans.",
           "What is a star?": "A star is a hot ball of gas.",
           "Why is the sky blue?": "Why is the sky blue? Because air scatters blue light.",
           "What is the Moon made of?": "Cheese is tasty.",                      # about something else
           "What makes wind blow?": "Wind is moving air.",
           "Where does sand come from?": "Sand comes from worn rocks."}
REVISIONS = {"Why does ice float?": "Ice is lighter than the water it pushes aside, so it floats.",
             "What is rain?": "Rain is water that falls from clouds as drops.",
             "How do tides work?": "The Moon's pull raises the oceans twice a day.",
             "What is a star?": "Stars.",
             "What makes wind blow?": "Wind is air that moves from high to low pressure.",
             "Where does sand come from?": "Bananas are yellow."}                 # off topic: never reviewed
SCORES = {"Ice is less dense than water.": 3, "Ice is lighter than the water it pushes aside, so it floats.": 9,
          "Rain is water falling from clouds.": 6, "Rain is water that falls from clouds as drops.": 7,
          "Tides come from the Moon pulling the oceans.": 6, "A star is a hot ball of gas.": 6, "Stars.": 2,
          "Wind is moving air.": 3, "Wind is air that moves from high to low pressure.": 5,
          "Sand comes from worn rocks.": 6, "Bananas are yellow.": 10}


def script() -> list[tuple[str, Any]]:
    def review(body: dict[str, Any]) -> dict[str, Any]:
        draft = body["messages"][-1]["content"].split("Text to review:\n", 1)[1]
        return {"feedback": "Say more.", "scores": {"accuracy": SCORES[draft], "clarity": SCORES[draft]}}

    def refine(body: dict[str, Any]) -> str:
        question = re.match(r"Question: (.*?)\n", body["messages"][-1]["content"]).group(1)  # type: ignore[union-attr]
        return REVISIONS[question]

    return [("Text to review:", review), ("^Question: ", refine),
            ("^Topic: ", lambda body: QUESTIONS[body["messages"][-1]["content"].removeprefix("Topic: ")]),
            (".", lambda body: ANSWERS[body["messages"][-1]["content"]])]


async def test_quickstart_hygiene_best_draft_and_margin(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*", script=script(), cut_off=[r"^Question: How do tides work\?"])
    (tmp_path / "topics.jsonl").write_text("".join(json.dumps({"id": t, "topic": t}) + "\n" for t in QUESTIONS))
    graph = synthloom.load(GRAPH, endpoint=server.url, overrides=[f"seed.source.path={tmp_path / 'topics.jsonl'}"])
    result = await synthloom.arun(graph, tmp_path / "out")

    sft = {record["metadata"]["id"]: record for record in lines(result.path("sft"))}
    best = {key: record["messages"][1]["content"] for key, record in sft.items()}
    assert best == {"ice": REVISIONS["Why does ice float?"],        # 9 over 3
                    "rain": REVISIONS["What is rain?"],             # 7 over 6
                    "tides": ANSWERS["How do tides work?"],         # the revision was cut off: never reviewed
                    "stars": ANSWERS["What is a star?"],            # 6 over 2: the first draft stays
                    "sand": ANSWERS["Where does sand come from?"]}  # the revision was off topic: never reviewed
    assert sft["tides"]["metadata"]["revisions"] == 0 and sft["ice"]["metadata"]["score"] == 9
    assert sft["sand"]["metadata"]["revisions"] == 0
    assert min(record["metadata"]["score"] for record in sft.values()) >= 6  # the judge's floor
    pairs = {record["metadata"]["id"]: record for record in lines(result.path("dpo"))}
    assert sorted(pairs) == ["ice", "stars"]                        # rain's margin of 1 is below 2; wind's
    assert pairs["stars"]["chosen"][0]["content"] == ANSWERS["What is a star?"]  # 5 over 3 is below the floor
    assert pairs["stars"]["rejected"][0]["content"] == "Stars." and pairs["stars"]["metadata"]["margin"] == 4
    assert all(pair["metadata"]["chosen_score"] - pair["metadata"]["rejected_score"] >= 2 for pair in pairs.values())
    assert result.manifest["counts"]["drop_reasons"] == {
        "keep_question: question does not end with ?": 1,
        "keep_answer: answer repeats the question": 1,
        "keep_answer: answer shares no word with its question or topic": 1,          # moon
        "judge_floor: the judge scored every draft below 6 of 10": 1}                # wind: best 5

"""The quickstart workflow against the fixture server: its hygiene drops non-questions and echoing
answers, a revision that is cut off is never reviewed (so never written), the SFT record keeps the
best-scored draft, and a DPO pair is made only where the judge's margin is at least 2."""
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
             "stars": "What is a star?", "clouds": "Clouds are white.", "sky": "Why is the sky blue?"}
ANSWERS = {"Why does ice float?": "Ice is less dense than water.",
           "What is rain?": "Rain is water falling from clouds.",
           "How do tides work?": "The Moon pulls the oceans.",
           "What is a star?": "A star is a hot ball of gas.",
           "Why is the sky blue?": "Why is the sky blue? Because air scatters blue light."}
REVISIONS = {"Why does ice float?": "Ice is lighter than the water it pushes aside, so it floats.",
             "What is rain?": "Rain is water that falls from clouds as drops.",
             "How do tides work?": "The Moon's pull raises the oceans twice a day.",
             "What is a star?": "Stars."}
SCORES = {"Ice is less dense than water.": 3, "Ice is lighter than the water it pushes aside, so it floats.": 9,
          "Rain is water falling from clouds.": 6, "Rain is water that falls from clouds as drops.": 7,
          "The Moon pulls the oceans.": 5, "A star is a hot ball of gas.": 6, "Stars.": 2}


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
                    "stars": ANSWERS["What is a star?"]}            # 6 over 2: the first draft stays
    assert sft["tides"]["metadata"]["revisions"] == 0 and sft["ice"]["metadata"]["score"] == 9
    pairs = {record["metadata"]["id"]: record for record in lines(result.path("dpo"))}
    assert sorted(pairs) == ["ice", "stars"]                        # rain's margin of 1 is below 2
    assert pairs["stars"]["chosen"][0]["content"] == ANSWERS["What is a star?"]
    assert pairs["stars"]["rejected"][0]["content"] == "Stars." and pairs["stars"]["metadata"]["margin"] == 4
    assert all(pair["metadata"]["chosen_score"] - pair["metadata"]["rejected_score"] >= 2 for pair in pairs.values())
    assert result.manifest["counts"]["drop_reasons"] == {"keep_question: question does not end with ?": 1,
                                                         "keep_answer: answer repeats the question": 1}

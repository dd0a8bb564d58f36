"""What the node tests share: reading output files, a scripted critic, and the critic-refine loop graph."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def judge(scores: list[int]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A critic's reply for the fixture server: `scores` in turn for each question (then the last one again).
    The question is read from the critic's context line `Question: ...`."""
    calls: Counter[str] = Counter()

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        found = re.search(r"Question: (.*)", body["messages"][-1]["content"])
        question = found.group(1) if found else ""
        calls[question] += 1
        return {"feedback": "Say more.", "scores": {"accuracy": scores[min(calls[question], len(scores)) - 1]}}

    return reply


def critic_loop(*, model: str = "w", judge_model: str = "w", max_visits: int = 3) -> dict[str, Any]:
    """Nodes and edges of answer -> review -> refine (while not passed, at most max_visits) -> review.
    Prompts the fixture can tell apart: the critic's holds `Text to review`, the refiner's starts `Improve`."""
    return {
        "nodes": {
            "answer": {"type": "llm", "model": model, "output": "answer",
                       "messages": [{"role": "user", "content": "{{ question }}"}]},
            "review": {"type": "critic", "model": judge_model, "field": "answer", "criteria": ["accuracy"],
                       "context": "Question: {{ question }}", "pass_score": 7},
            "refine": {"type": "llm", "model": model, "output": "answer",
                       "messages": [{"role": "user", "content": "Improve: {{ answer }} {{ review.feedback }}"}]},
        },
        "edges": [["answer", "review"],
                  {"from": "review", "to": "refine", "when": "not review.passed", "max_visits": max_visits},
                  ["refine", "review"]],
    }

"""Glue for the weak/strong DPO workflow (SENSE, Yang et al. 2024, on maths word problems instead of SQL):
a verifier that reads the final number of an answer and compares it with the gold answer, the part SENSE
gives to its SQL executor."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from synthloom import node
from synthloom.errors import RecordError

__graph_api__ = ["check"]
"""What the workflow's graph names besides its @node functions (`synthloom.graph.registry.GRAPH_API`)."""

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
ANSWER_LINE = re.compile(r"(?:answer(?:\s*(?:is|:|=))*|####)[\s*\"'$]*(-?[\d.,]*\d)", re.IGNORECASE)


def final_number(text: str) -> float | None:
    """The number after the last 'Answer:' ('answer is', GSM8K's '####'), else the last number in the text;
    None if there is none. Thousands separators are ignored: 'Answer: $2,205.' is 2205."""
    marked = ANSWER_LINE.findall(text)
    candidates = marked or NUMBER.findall(text)
    for raw in reversed(candidates):
        try:
            return float(raw.replace(",", "").rstrip("."))
        except ValueError:
            continue
    return None


def matches(text: str, gold: Any) -> bool:
    """Whether the answer's final number equals the gold answer (to a relative 1e-6)."""
    try:
        expected = float(str(gold).replace(",", ""))
    except ValueError:
        raise RecordError(f"gold answer {gold!r} is not a number") from None
    found = final_number(text)
    return found is not None and math.isclose(found, expected, rel_tol=1e-6, abs_tol=1e-9)


def check(prompt: str, candidate: str, state: Mapping[str, Any]) -> bool:
    """The `pairs` verifier: a weak sample is correct when its final number is the record's gold `answer`."""
    return matches(candidate, state["answer"])


@node(writes=["strong_correct", "weak_correct", "weak_samples"])
def grade(strong_answer: str, weak_answers: list[str], answer: Any) -> dict[str, Any]:
    """Verdicts for the record's metadata: is the strong answer right, how many weak samples are."""
    return {"strong_correct": matches(strong_answer, answer),
            "weak_correct": sum(matches(sample, answer) for sample in weak_answers),
            "weak_samples": len(weak_answers)}

"""Glue for the function_calling workflow (APIGen, Liu et al. 2024): the three-stage verification of a tool
trajectory (format, execution, then the judge's verdict) and the choice of what is written: a verified
trajectory as SFT, and a verified against a failed one, for the same query, as a DPO pair."""
from __future__ import annotations

from typing import Any

import jsonschema
from synthloom import node

PROMPT_TURNS = 2
"""The system and user messages the two attempts share: the DPO pair's prompt."""


def format_problems(calls: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[str]:
    """Stage 1, format: the trajectory calls at least one tool, and each call names one of the tools with
    arguments that fit its JSON schema."""
    schemas = {tool["function"]["name"]: tool["function"].get("parameters") or {} for tool in tools}
    if not calls:
        return ["no tool was called"]
    problems = []
    for call in calls:
        schema = schemas.get(call["name"])
        if schema is None:
            problems.append(f"{call['name']}: no such tool")
            continue
        if not isinstance(call["arguments"], dict):
            problems.append(f"{call['name']}: arguments are not an object")
            continue
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(call["arguments"]))
        if error is not None:
            problems.append(f"{call['name']}: {error.message}")
    return problems


def execution_problems(calls: list[dict[str, Any]]) -> list[str]:
    """Stage 2, execution: every call ran and returned a result (the tools were called for real)."""
    return [f"{call['name']}: {call['result']}" for call in calls if not call["ok"]]


@node(writes=["a_stage", "b_stage"])
def check(attempt_a_calls: list[dict[str, Any]], attempt_b_calls: list[dict[str, Any]],
          attempt_a_tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Stages 1 and 2 for both attempts: the first stage each failed ("format", "execution"), or "judge"
    when it is the judge's turn."""
    def stage(calls: list[dict[str, Any]]) -> str:
        if format_problems(calls, attempt_a_tools):
            return "format"
        return "execution" if execution_problems(calls) else "judge"
    return {"a_stage": stage(attempt_a_calls), "b_stage": stage(attempt_b_calls)}


@node(writes=["a_verified", "b_verified", "verified", "verified_trajectory", "pairs"])
def select(attempt_a: list[dict[str, Any]], attempt_b: list[dict[str, Any]], a_stage: str, b_stage: str,
           verdict: dict[str, Any]) -> dict[str, Any]:
    """Stage 3 (the judge's verdict) and what is written: the first verified attempt as SFT; a DPO pair of
    the verified attempt against the failed one when exactly one attempt passed all three stages."""
    a_ok = a_stage == "judge" and bool(verdict.get("a_answers"))
    b_ok = b_stage == "judge" and bool(verdict.get("b_answers"))
    chosen = attempt_a if a_ok else attempt_b if b_ok else None
    pairs = []
    if a_ok != b_ok:
        good, bad = (attempt_a, attempt_b) if a_ok else (attempt_b, attempt_a)
        pairs.append({"prompt": good[:PROMPT_TURNS], "chosen": good[PROMPT_TURNS:], "rejected": bad[PROMPT_TURNS:]})
    return {"a_verified": a_ok, "b_verified": b_ok, "verified": chosen is not None,
            "verified_trajectory": chosen or [], "pairs": pairs}

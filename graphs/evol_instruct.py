"""Glue for the evol_instruct workflow (WizardLM, Xu et al. 2023): start a record's evolution, pick an
evolution operation per round in code, apply the paper's elimination rules, and accept a round.

A round that fails the eliminator drops the record in its first round (it has nothing evolved to give);
in a later round it ends the evolution and the record keeps its last accepted instruction and response
(the paper puts a failed item back in the pool unchanged)."""
from __future__ import annotations

import random
import re
from typing import Any

from synthloom import Drop, node

# The paper's scaffold words, and our evolver prompt's own ("Rewrite this instruction so that ...").
SCAFFOLD_PHRASES = ["#given prompt#", "#rewritten prompt#", "given prompt", "rewritten prompt",
                    "rewritten instruction", "rewrite this instruction", "rewrite the instruction",
                    "new instruction:", "instruction for an ai assistant"]
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself yourselves
""".split())
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@node(writes=["current", "rounds", "operations", "stopped_by"])
def begin(instruction: str) -> dict[str, Any]:
    """The seed instruction is the one the first round evolves."""
    return {"current": instruction.strip(), "rounds": 0, "operations": [], "stopped_by": ""}


@node(writes=["operation", "operation_hint"])
def pick_operation(id: str, rounds: int, *, operations: dict[str, str], seed: int = 0) -> dict[str, Any]:
    """Draw this round's operation uniformly, seeded by the record id and the round (a re-run draws the
    same; each round of a record draws anew)."""
    if not operations:
        raise ValueError("operations is empty; give {name: instruction for the evolver}")
    name = random.Random(f"{seed}:{id}:{rounds}").choice(list(operations))
    return {"operation": name, "operation_hint": operations[name]}


def failed_rule(evolved: str, response: str, adds_information: str, *, sorry_max_words: int,
                scaffold_phrases: list[str]) -> str:
    """The first of the paper's four elimination rules the round breaks, or ""."""
    if adds_information != "yes":
        return "no information gain"
    lowered = response.lower()
    if "sorry" in lowered and len(response.split()) < sorry_max_words:
        return "response is a short apology"
    if not [word for word in WORD.findall(lowered) if word not in STOP_WORDS]:
        return "response is only punctuation and stop words"
    evolved_lowered = evolved.lower()
    if any(phrase.lower() in evolved_lowered for phrase in scaffold_phrases):
        return "evolved instruction copies scaffold words"
    return ""


@node(writes=["stopped_by"])
def eliminate(evolved: str, response: str, gain: dict[str, Any], rounds: int, *, sorry_max_words: int = 80,
              scaffold_phrases: list[str] | None = None) -> dict[str, Any] | Drop:
    """Rule 1 reads the judge's verdict (`gain.adds_information`); rules 2-4 are checked here. A failing
    first round drops the record with the rule as reason; a failing later round stops the evolution."""
    reason = failed_rule(evolved, response, str(gain.get("adds_information", "")), sorry_max_words=sorry_max_words,
                         scaffold_phrases=scaffold_phrases if scaffold_phrases is not None else SCAFFOLD_PHRASES)
    if reason and rounds == 0:
        return Drop(reason, {"evolved": evolved[:300], "response": response[:300]})
    return {"stopped_by": reason}


@node(writes=["current", "final_instruction", "final_response", "rounds", "operations"])
def accept(evolved: str, response: str, rounds: int, operations: list[str], operation: str) -> dict[str, Any]:
    """The evolved instruction and its response become the record's result and the next round's start."""
    evolved = evolved.strip().strip('"“”').strip()
    return {"current": evolved, "final_instruction": evolved, "final_response": response.strip(),
            "rounds": rounds + 1, "operations": [*operations, operation]}

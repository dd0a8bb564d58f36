"""`pairs`: DPO preference pairs from scored candidates (several samples judged by a critic, weak samples
checked by a verifier) or from a critic loop's history (first draft vs accepted draft).

A pair teaches only if its two sides differ and the margin between them is real, so a pair is made only
where chosen scores strictly higher by at least `min_margin` and the texts differ after normalising case,
spacing and surrounding punctuation: a DPO pair of two identical answers is noise. A text that comes up
more than once counts once, at its best score, so it is never both chosen and rejected.
"""
from __future__ import annotations

import asyncio
import inspect
import string
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field, model_validator
from synthloom.config import ceilings
from synthloom.errors import RecordError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Drop, Node, NodeParams
from synthloom.graph.registry import import_object
from synthloom.sandbox.expressions import Condition
from synthloom.sandbox.templates import Template


class PairsParams(NodeParams):
    prompt: str = Field(description="template of the pairs' prompt (e.g. '{{ question }}')")
    candidates: str | None = Field(default=None, description="state key holding the list of candidates")
    score: str | None = Field(default=None, description="expression giving a candidate's score, with `item` "
                              "bound to it (e.g. item.review.score)")
    verifier: str | None = Field(default=None, description="package.module:function(prompt, candidate, "
                                 "state) -> bool or number, instead of score; may be async")
    text: str = Field(default="item", description="expression giving a candidate's text (e.g. item.answer)")
    from_history: str | None = Field(default=None, description="instead of candidates: a critic's "
                                     "`<output>_history` key; pairs the first draft with the accepted (last) one")
    strategy: Literal["best_worst", "all_pairs"] = Field(
        default="best_worst", description="best_worst: one pair, the best text against the worst; all_pairs: "
                                          "every pair of texts that clears the margin")
    min_margin: float = Field(default=0.0, ge=0, le=ceilings.MAX_SCORE,
                              description="chosen must score at least this much higher")
    max_pairs: int | None = Field(default=None, ge=1, le=ceilings.MAX_DRAW,
                                  description="all_pairs: keep the widest margins")
    output: str = Field(default="pairs", description="state key for the list of {prompt, chosen, rejected, "
                        "chosen_score, rejected_score, margin}")
    drop_if_none: bool = Field(default=False, description="drop the record when no pair qualifies "
                               "(default: write an empty list)")

    @model_validator(mode="after")
    def _one_source(self) -> PairsParams:
        if (self.candidates is None) == (self.from_history is None):
            raise ValueError("give either candidates: <state key> or from_history: <critic history key>")
        if self.candidates is not None and (self.score is None) == (self.verifier is None):
            raise ValueError("with candidates give either score: <expression over item> or verifier: "
                             "package.module:function")
        return self


Scored = tuple[float, str]


class Pairs(Node[PairsParams]):
    """DPO pairs from scored candidates or a critic history; chosen never equals rejected."""

    def __init__(self, name: str, params: PairsParams):
        super().__init__(name, params)
        self.prompt = Template(params.prompt)
        self.score = Condition(params.score) if params.score else None
        self.text = Condition(params.text)
        self.verifier: Callable[..., Any] | None = None
        if params.verifier:
            self.verifier = import_object(params.verifier)
            if not callable(self.verifier):
                raise ValueError(f"verifier: '{params.verifier}' is not a function")

    def reads(self) -> set[str]:
        source = self.params.candidates if self.params.candidates is not None else self.params.from_history
        keys = set(self.prompt.variables) | ({source} if source else set())
        for expression in (self.score, self.text):
            if expression is not None:
                keys |= expression.names - {"item"}
        return keys

    def writes(self) -> set[str]:
        return {self.params.output}

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any] | Drop:
        prompt = self.prompt.render(state)
        if self.params.from_history:
            scored = self._history(state)
            found = self._clearing([_pair(scored[-1], scored[0], prompt)] if len(scored) > 1 else [])
        else:
            scored = await self._scored(state, prompt)
            found = self._choose(scored, prompt)
        if not found and self.params.drop_if_none:
            return Drop("no preference pair", {"candidates": len(scored)})
        return {self.params.output: found}

    def _history(self, state: Mapping[str, Any]) -> list[Scored]:
        key = self.params.from_history or ""
        history = state.get(key) or []
        if not isinstance(history, list) or not all(isinstance(h, dict) and {"draft", "score"} <= h.keys()
                                                    for h in history):
            raise RecordError(f"'{key}' should be a critic history: a list of {{draft, score, feedback}}")
        return [(_number(entry["score"], key), str(entry["draft"])) for entry in history]

    async def _scored(self, state: Mapping[str, Any], prompt: str) -> list[Scored]:
        key = self.params.candidates or ""
        items = state.get(key)
        if not isinstance(items, list):
            raise RecordError(f"'{key}' should be a list of candidates, not {type(items).__name__}")
        texts = [self.text.evaluate(state, {"item": item}) for item in items]
        if not all(isinstance(text, str) for text in texts):
            raise RecordError(f"text '{self.params.text}' should give a string for each candidate of '{key}'")
        # an empty answer teaches nothing
        kept = [(item, text) for item, text in zip(items, texts, strict=True) if text.strip()]
        if self.score is not None:
            scores = [self.score.evaluate(state, {"item": item}) for item, _ in kept]
        else:
            scores = await asyncio.gather(*(self._verify(prompt, text, state) for _, text in kept))
        where = self.params.score or self.params.verifier or ""
        return [(_number(score, where), text) for score, (_, text) in zip(scores, kept, strict=True)]

    async def _verify(self, prompt: str, text: str, state: Mapping[str, Any]) -> Any:
        assert self.verifier is not None
        if inspect.iscoroutinefunction(self.verifier):
            return await self.verifier(prompt, text, state)
        return await asyncio.to_thread(self.verifier, prompt, text, state)

    def _choose(self, scored: list[Scored], prompt: str) -> list[dict[str, Any]]:
        ranked = _distinct(scored)
        if self.params.strategy == "best_worst":
            return self._clearing([_pair(ranked[0], ranked[-1], prompt)] if len(ranked) > 1 else [])
        pairs = [_pair(better, worse, prompt) for index, better in enumerate(ranked) for worse in ranked[index + 1:]]
        kept = sorted(self._clearing(pairs), key=lambda pair: -pair["margin"])
        return kept[:self.params.max_pairs] if self.params.max_pairs else kept

    def _clearing(self, pairs: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
        return [pair for pair in pairs if pair is not None and pair["margin"] >= self.params.min_margin]


def _distinct(scored: list[Scored]) -> list[Scored]:
    """Best first, each text once at its highest score: a text judged twice must not end up on both sides."""
    best: dict[str, Scored] = {}
    for candidate in sorted(scored, key=lambda item: -item[0]):  # stable: ties keep the candidates' order
        best.setdefault(normalised(candidate[1]), candidate)
    return list(best.values())


def _pair(chosen: Scored, rejected: Scored, prompt: str) -> dict[str, Any] | None:
    """A pair, or None where it would teach nothing: no margin, or the same text."""
    margin = round(chosen[0] - rejected[0], 6)
    if margin <= 0 or normalised(chosen[1]) == normalised(rejected[1]):
        return None
    return {"prompt": prompt, "chosen": chosen[1], "rejected": rejected[1], "chosen_score": chosen[0],
            "rejected_score": rejected[0], "margin": margin}


def normalised(text: str) -> str:
    """Text as compared for sameness: Unicode-normalised, case-folded, spacing collapsed, outer punctuation off."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return folded.strip(string.punctuation + " ")


def _number(value: Any, where: str) -> float:
    if isinstance(value, (int, float)):  # true/false count as 1/0
        return float(value)
    raise RecordError(f"'{where}' gave {value!r} for a candidate; a score is a number or true/false")

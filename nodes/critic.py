"""`critic`: an LLM judge with a rubric. Writes {score, feedback, scores, passed} and keeps the history of
drafts and scores, so a refine loop yields both the accepted answer and the first-vs-final pair."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator
from synthloom.config import ceilings
from synthloom.engine.generate import generate
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeParams
from synthloom.graph.output_schema import OutputSchema
from synthloom.sandbox.templates import Template

MAX_SCALE_STEPS = 100


class CriticParams(NodeParams):
    model: str = Field(default="default", description="a name under models: (the judge)")
    field: str = Field(description="the state key holding the text to judge")
    context: str | None = Field(default=None, description="template shown with the text (e.g. the question)")
    criteria: list[str] = Field(default_factory=lambda: ["overall quality"],
                                description="each is scored on the scale; `score` is their mean")
    scale: tuple[ceilings.ScaleEnd, ceilings.ScaleEnd] = Field(default=(1, 10),
                                                               description="[lowest, highest] integer score")
    pass_score: float | None = Field(default=None, ge=-ceilings.MAX_SCORE, le=ceilings.MAX_SCORE,
                                     description="score at or above which `passed` is true "
                                     "(default: 70% of the way up the scale)")
    rubric: str | None = Field(default=None, description="extra guidance for the judge")
    output: str = Field(default="review", description="state key for {score, feedback, scores, passed}; "
                        "`<output>_history` gets [{draft, score, feedback}], one entry per review")
    params: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 200},
                                   description="overrides of the model's params")
    parse_retries: int = Field(default=2, ge=0, le=ceilings.MAX_RETRIES,
                               description="retries of a verdict that does not parse")

    @field_validator("scale")
    @classmethod
    def _scale_small(cls, scale: tuple[int, int]) -> tuple[int, int]:
        if scale[1] - scale[0] > MAX_SCALE_STEPS:
            raise ValueError(f"spans at most {MAX_SCALE_STEPS} steps (each score is listed for the judge's "
                             f"grammar), e.g. [1, 10] or [0, 100]")
        return scale

    @model_validator(mode="after")
    def _scale_ordered(self) -> CriticParams:
        if self.scale[0] >= self.scale[1]:
            raise ValueError("scale is [lowest, highest], lowest first")
        if not self.criteria:
            raise ValueError("give at least one criterion")
        return self


class Critic(Node[CriticParams]):
    """Judge a text against criteria on a scale; structured {score, feedback}; history kept for loops."""

    def __init__(self, name: str, params: CriticParams):
        super().__init__(name, params)
        low, high = params.scale
        self.pass_score = params.pass_score if params.pass_score is not None else low + 0.7 * (high - low)
        self.context = Template(params.context) if params.context else None
        score = {"type": "integer", "enum": list(range(low, high + 1))}  # enums bind llama.cpp grammars
        self.schema = OutputSchema({
            "type": "object",
            "properties": {"feedback": {"type": "string", "maxLength": 400},
                           "scores": {"type": "object", "properties": {c: score for c in params.criteria},
                                      "required": list(params.criteria)}},
            "required": ["feedback", "scores"]})
        self.history_key = f"{params.output}_history"

    def reads(self) -> set[str]:
        return {self.params.field} | (self.context.variables if self.context else set())

    def writes(self) -> set[str]:
        return {self.params.output, self.history_key}

    def models(self) -> set[str]:
        return {self.params.model}

    def _messages(self, state: Mapping[str, Any]) -> list[dict[str, str]]:
        low, high = self.params.scale
        criteria = ", ".join(self.params.criteria)
        system = (f"You are a strict reviewer. Score the text on each criterion ({criteria}) from {low} "
                  f"(worst) to {high} (best). First write one or two sentences of feedback saying what to "
                  f"improve, then the scores. Reply with JSON only.")
        if self.params.rubric:
            system += f"\nRubric: {self.params.rubric}"
        context = f"Context:\n{self.context.render(state)}\n\n" if self.context else ""
        return [{"role": "system", "content": system},
                {"role": "user", "content": f"{context}Text to review:\n{state[self.params.field]}"}]

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        verdict = await generate(ctx, node=self.name, model=self.params.model, messages=self._messages(state),
                                 params=self.params.params, schema=self.schema, parse_retries=self.params.parse_retries)
        scores = {criterion: verdict["scores"][criterion] for criterion in self.params.criteria}
        score = round(sum(scores.values()) / len(scores), 2)
        review = {"score": score, "feedback": verdict["feedback"], "scores": scores,
                  "passed": score >= self.pass_score}
        history = [*state.get(self.history_key, []),
                   {"draft": state[self.params.field], "score": score, "feedback": verdict["feedback"]}]
        return {self.params.output: review, self.history_key: history}

"""Few-shot examples for a prompt: a pool (a JSONL or JSON file beside the graph, or an inline list) and a
draw of k examples per record, seeded by the record id so that a re-run or a `--resume` draws the same ones
(and hits the response cache) while different records still see different examples."""
from __future__ import annotations

import json
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from synthloom.config import ceilings
from synthloom.errors import ConfigError
from synthloom.graph.context import RunContext


class FewShotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pool: str | list[Any] = Field(description="a .jsonl or .json file (relative to the graph file), or an "
                                  "inline list of examples")
    k: int = Field(default=3, ge=1, le=ceilings.MAX_DRAW,
                   description="examples per record (all of them if the pool is smaller)")
    seed: ceilings.Seed = Field(default=0, description="with the record id, decides which examples a record gets")
    as_: str = Field(default="examples", alias="as", description="the template variable holding the draw")

    @field_validator("pool")
    @classmethod
    def _not_empty(cls, pool: str | list[Any]) -> str | list[Any]:
        if isinstance(pool, list) and not pool:
            raise ValueError("the few-shot pool is empty; give it at least one example")
        return pool


class FewShotPool:
    """The examples of one node, loaded once per run."""

    def __init__(self, config: FewShotConfig, where: str):
        self.config = config
        self.where = where
        self.examples: list[Any] | None = config.pool if isinstance(config.pool, list) else None

    @property
    def variable(self) -> str:
        return self.config.as_

    def load(self, ctx: RunContext) -> None:
        if isinstance(self.config.pool, list):
            return
        path, text = ctx.read_file(self.config.pool, f"{self.where}.pool", "the few-shot pool ")
        try:
            examples = _parse(text, whole=path.suffix == ".json")
        except ValueError as error:
            raise ConfigError(f"the few-shot pool {path} is not valid JSON ({error})",
                              key=f"{self.where}.pool") from None
        if not isinstance(examples, list) or not examples:
            raise ConfigError(f"the few-shot pool {path} should hold a non-empty list of examples",
                              key=f"{self.where}.pool")
        self.examples = examples

    def draw(self, record_id: str) -> list[Any]:
        if self.examples is None:
            raise RuntimeError("few-shot pool used before the run's setup loaded it")
        rng = random.Random(f"{self.config.seed}:{record_id}")  # str seeds are stable across processes
        return rng.sample(self.examples, min(self.config.k, len(self.examples)))


def _parse(text: str, *, whole: bool) -> Any:
    """A .json file's value, or a JSONL file's rows; ValueError naming the line that broke."""
    if whole:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{error.msg}, line {error.lineno}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{error.msg}, line {number}") from None
    return rows

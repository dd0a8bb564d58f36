"""`filter`: keep a record while safe expressions over its state hold; drop it, with a reason, otherwise.

The reason is what the manifest counts drops by (`counts.drop_reasons`), so a funnel of several rules
shows which rule removed how much (Magpie-style filter funnels, methods.md §3). Expressions are the same
safe `when:` expressions as edges: `tags.words >= 20 and not tags.refusal`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from synthloom.graph.context import RunContext
from synthloom.graph.node import Drop, Node, NodeParams
from synthloom.sandbox.expressions import Condition


def _parses(source: str) -> str:
    Condition(source)  # a ValueError naming the expression, raised at graph load
    return source


Expression = Annotated[str, AfterValidator(_parses)]


class KeepRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: Expression = Field(description="keep the record while this holds")
    reason: str | None = Field(default=None, description="drop reason when it does not (default: the "
                                                         "expression)")


class FilterParams(NodeParams):
    when: Expression | None = Field(default=None, description="keep the record while this expression holds")
    reason: str | None = Field(default=None, description="drop reason for `when` (default: the expression)")
    rules: list[KeepRule] | None = Field(
        default=None, description="[{when, reason}] checked in order; the first that fails names the drop")

    @model_validator(mode="after")
    def _one_form(self) -> FilterParams:
        if (self.when is None) == (self.rules is None):
            raise ValueError("give either when: <expression> or rules: [{when, reason}, ...]")
        if self.rules is not None and not self.rules:
            raise ValueError("rules is empty; give at least one {when, reason}")
        if self.reason is not None and self.when is None:
            raise ValueError("reason goes with when:; in rules: give each rule its own reason")
        return self

    def keep_rules(self) -> list[KeepRule]:
        if self.rules is not None:
            return self.rules
        assert self.when is not None
        return [KeepRule(when=self.when, reason=self.reason)]


class Filter(Node[FilterParams]):
    """Keep records where safe expressions hold; drop the rest with a reason the manifest counts.

    `when:` is one condition; `rules:` are checked in order and the first that fails names the reason.
    """

    def __init__(self, name: str, params: FilterParams):
        super().__init__(name, params)
        self.rules = [(Condition(rule.when), rule.reason) for rule in params.keep_rules()]

    def reads(self) -> set[str]:
        return set().union(*(condition.names for condition, _ in self.rules))

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> Drop | None:
        for condition, reason in self.rules:
            if not condition.holds(state):
                return Drop(reason or condition.source, {"failed": condition.source} if reason else None)
        return None

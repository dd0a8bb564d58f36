"""Glue for the magpie workflow (Xu et al. 2024): the pre-query completion.

Every Magpie record sends the *same* prompt (the chat template up to the user turn), so a plain `llm`
node would give every record the same request: one response-cache entry and, on the embedded model, one
llama.cpp seed, hence one instruction for the whole run. `PreQuery` is an `llm` node (same parameters,
`prompt:` only) whose sample index is the record's position (`index` of a `none` seed row, else a hash of
its id): each record gets its own cache entry and, with a `seed` param, its own seed."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import model_validator
from synthloom.context import RunContext
from synthloom.generate import generate
from synthloom_nodes.llm import LLMNode, LLMParams


class PreQueryParams(LLMParams):
    @model_validator(mode="after")
    def _raw_prompt_to_text(self) -> PreQueryParams:
        if self.prompt is None or self.messages is not None:
            raise ValueError("a pre-query node takes prompt: (the template up to the user turn), not messages")
        if self.output is None or self.output_schema is not None or self.n != 1:
            raise ValueError("a pre-query node writes one plain text: give output: <key>, no output_schema or n")
        return self


def record_sample(state: Mapping[str, Any]) -> int:
    """The record's position, or a stable number from its id."""
    index = state.get("index")
    if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
        return index
    return int(hashlib.sha1(str(state["id"]).encode()).hexdigest()[:8], 16)


class PreQuery(LLMNode):
    """Raw completion of a chat template's pre-query prefix, one sample per record: the model writes a user
    turn (an instruction) of its own."""

    Params = PreQueryParams
    description = __doc__ or ""

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        assert self.prompt is not None and self.p.output is not None
        text = await generate(ctx, node=self.name, model=self.p.model, prompt=self.prompt.render(state),
                              params=self.p.params, sample=record_sample(state))
        return {self.p.output: text.strip()}

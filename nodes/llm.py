"""`llm`: render messages from the record, call a model, write the reply (or a parsed object) to the state.
With `few_shot`, each record's templates also see k examples drawn from a pool. With `tools`, the node runs
the tool loop (`synthloom.engine.tool_loop`) and can write the whole exchange as a TRL tool-calling trajectory."""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator
from synthloom.config import ceilings
from synthloom.config.schema import MessageTemplate
from synthloom.engine.generate import generate_with_finish
from synthloom.engine.tool_loop import run_tool_loop, tool_mode
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeParams
from synthloom.graph.output_schema import OutputSchema
from synthloom.sandbox.templates import Template, render_messages

from .few_shot import FewShotConfig, FewShotPool


class LLMParams(NodeParams):
    model: str = Field(default="default", description="a name under models: (default: the embedded model)")
    messages: list[MessageTemplate] | None = Field(default=None, description="chat messages, Jinja2 templates")
    prompt: str | None = Field(default=None, description="raw completion prompt instead of messages")
    output: str | None = Field(default=None, description="state key for the reply; with output_schema and "
                               "no output, the object's fields are written as keys")
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the model's params")
    n: int = Field(default=1, ge=1, le=ceilings.MAX_SAMPLES,
                   description="samples per record; with n > 1 the output is a list")
    vary_by: str | None = Field(default=None, description="a state key (e.g. index or id) that makes each "
                                "record's sample its own when every record sends the same prompt (Magpie): "
                                "it enters the sample index, hence the cache key and the seed")
    output_schema: dict[str, Any] | str | None = Field(
        default=None, description="JSON Schema, or package.module:PydanticModel")
    parse_retries: int = Field(default=2, ge=0, le=ceilings.MAX_RETRIES,
                               description="a reply that does not fit output_schema is asked "
                               "again this many times: shown its error (messages), or sampled anew (prompt)")
    finish_reason_key: str | None = Field(
        default=None, description="also write the model's finish reason (stop, length, ...) to this state key "
                                  "(a list with n > 1), so a tagger or filter can drop replies cut by max_tokens")
    few_shot: FewShotConfig | None = Field(
        default=None, description="{pool: file or list, k: 3, seed: 0, as: examples}: k examples per record "
                                  "(seeded by the record id) in the template variable `as`")
    tools: list[str] | None = Field(default=None, min_length=1, description="names of the graph's tools: "
                                    "entries the model may call; `output` gets its final answer")
    tool_choice: Literal["auto", "required", "none"] = Field(
        default="auto", description="with tools: required makes the first turn call a tool; none forbids calls")
    max_tool_rounds: int = Field(default=4, ge=1, le=ceilings.MAX_TOOL_ROUNDS,
                                 description="with tools: model turns that may call tools before it must answer")
    trajectory: str | None = Field(default=None, description="with tools: state key for the exchange as TRL "
                                   "messages (assistant tool_calls, tool results); <key>_tools gets the tools' "
                                   "JSON schemas (TRL's tools column) and <key>_calls each call and its outcome")

    @model_validator(mode="after")
    def _one_input(self) -> LLMParams:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give either messages or prompt")
        if self.output is None and self.output_schema is None:
            raise ValueError("give output: <state key> (where the reply goes)")
        if self.output is None and self.n > 1:
            raise ValueError("with n > 1 give output: <state key> for the list of samples")
        if self.tools is None and self.trajectory is not None:
            raise ValueError("trajectory is the exchange of a tool loop: give tools too")
        if self.tools is not None:
            unsupported = [key for key, given in (("prompt", self.prompt is not None), ("n", self.n > 1),
                                                  ("output_schema", self.output_schema is not None)) if given]
            if unsupported:
                raise ValueError(f"a node with tools takes messages and writes its answer to output; it does not "
                                 f"take {', '.join(unsupported)}")
        return self


def record_sample(value: Any) -> int:
    """A small whole number for a record: its index as is, else a stable hash of the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return int(hashlib.sha1(str(value).encode()).hexdigest()[:8], 16)


class LLMNode(Node[LLMParams]):
    """Call an LLM with templated messages; write the reply, n samples, or a structured object."""

    def __init__(self, name: str, params: LLMParams):
        super().__init__(name, params)
        self.messages = [(m.role, Template(m.content)) for m in params.messages or []]
        self.prompt = Template(params.prompt) if params.prompt is not None else None
        self.schema = OutputSchema(params.output_schema) if params.output_schema is not None else None
        self.few_shot = FewShotPool(params.few_shot, f"nodes.{name}.few_shot") if params.few_shot else None

    def reads(self) -> set[str]:
        variables = set(self.prompt.variables) if self.prompt else set()
        for _, template in self.messages:
            variables |= template.variables
        if self.few_shot:
            variables.discard(self.few_shot.variable)
        if self.params.vary_by:
            variables.add(self.params.vary_by)
        return variables

    def writes(self) -> set[str]:
        if self.params.tools is not None:
            trajectory = self.params.trajectory
            extra = {trajectory, f"{trajectory}_tools", f"{trajectory}_calls"} if trajectory else set()
            return {self.params.output or ""} | extra
        finish = {self.params.finish_reason_key} if self.params.finish_reason_key else set()
        if self.params.output is not None:
            return {self.params.output} | finish
        assert self.schema is not None
        return self.schema.fields | finish

    def models(self) -> set[str]:
        return {self.params.model}

    def tool_entries(self) -> set[str]:
        return set(self.params.tools or ())

    async def setup(self, ctx: RunContext) -> None:
        if self.few_shot:
            self.few_shot.load(ctx)
        if self.params.tools:
            await ctx.tools.start(self.params.tools)

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        if self.few_shot:
            state = {**state, self.few_shot.variable: self.few_shot.draw(state["id"])}
        messages = render_messages(self.messages, state) if self.messages else None
        prompt = self.prompt.render(state) if self.prompt else None
        if self.params.tools is not None:
            assert messages is not None
            return await self._with_tools(messages, ctx)

        base = record_sample(state[self.params.vary_by]) * self.params.n if self.params.vary_by else 0

        def one(sample: int) -> Any:
            return generate_with_finish(ctx, node=self.name, model=self.params.model, messages=messages, prompt=prompt,
                            params=self.params.params, schema=self.schema, parse_retries=self.params.parse_retries,
                            sample=base + sample)

        finish = self.params.finish_reason_key
        if self.params.n == 1:
            reply, reason = await one(0)
            updates = dict(reply) if self.params.output is None else {self.params.output: reply}
            return {**updates, finish: reason} if finish else updates
        results = await asyncio.gather(*(one(sample) for sample in range(self.params.n)))
        updates = {self.params.output: [reply for reply, _ in results]}
        return {**updates, finish: [reason for _, reason in results]} if finish else updates

    async def _with_tools(self, messages: list[dict[str, str]], ctx: RunContext) -> dict[str, Any]:
        params = self.params
        assert params.tools is not None and params.output is not None
        trajectory = await run_tool_loop(ctx, ctx.tools, node=self.name, model=params.model, messages=messages,
                                         tools=ctx.tools.tools(params.tools), tool_choice=params.tool_choice,
                                         max_rounds=params.max_tool_rounds, params=params.params,
                                         parse_retries=params.parse_retries, mode=tool_mode(ctx, params.model))
        updates: dict[str, Any] = {params.output: trajectory.answer}
        if params.trajectory:
            updates.update({params.trajectory: trajectory.messages, f"{params.trajectory}_tools": trajectory.tools,
                            f"{params.trajectory}_calls": trajectory.calls})
        return updates

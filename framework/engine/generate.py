"""One LLM generation as nodes need it: messages in, text (or a schema-checked object) out, with the
model shown its mistake and asked again when a structured reply does not parse. A raw prompt is the
user's own text, so a bad reply to it is not answered in it: the prompt is sampled again instead."""
from __future__ import annotations

import logging
from typing import Any

from ..errors import RecordError
from ..graph.context import RunContext
from ..graph.output_schema import OutputSchema
from ..models.base import LLMRequest

log = logging.getLogger("synthloom.engine.generate")
_budget_warned: set[tuple[int, str]] = set()

CUT_BUDGET_FACTOR = 4
CUT_BUDGET_CAP = 4096
"""A structured reply cut off by max_tokens is asked once more with the budget times this factor, up to the
cap; cut again, the record fails saying so."""
RETRY_SAMPLE_STRIDE = 1 << 20
"""A raw prompt's parse retry is its own sample (a new cache key, and a new seed where one is set), far
from the sample indexes `n` and `vary_by` use."""


async def generate(ctx: RunContext, *, node: str, model: str, messages: list[dict[str, str]] | None = None,
                   prompt: str | None = None, params: dict[str, Any] | None = None,
                   schema: OutputSchema | None = None, parse_retries: int = 2, sample: int = 0) -> Any:
    """The reply text, or with `schema` the parsed object. Raises `RecordError` when retries run out."""
    value, _ = await generate_with_finish(ctx, node=node, model=model, messages=messages, prompt=prompt,
                                          params=params, schema=schema, parse_retries=parse_retries, sample=sample)
    return value


async def generate_with_finish(ctx: RunContext, *, node: str, model: str,
                               messages: list[dict[str, str]] | None = None, prompt: str | None = None,
                               params: dict[str, Any] | None = None, schema: OutputSchema | None = None,
                               parse_retries: int = 2, sample: int = 0) -> tuple[Any, str | None]:
    """`generate`, with the server's finish reason ("stop", "length", ...; None when it gave none): a reply
    cut by max_tokens reads like a finished one, and only the finish reason tells them apart."""
    params = params or {}
    conversation = list(messages) if messages is not None else None
    attempts = 0
    first_budget: int | None = None  # set once a cut-off reply was asked again with a larger budget
    while True:
        resample = RETRY_SAMPLE_STRIDE * attempts if conversation is None else 0
        request = LLMRequest(messages=tuple(conversation) if conversation is not None else None,
                             prompt=prompt, params=params,
                             json_schema=schema.schema if schema else None, sample=sample + resample)
        completion = await ctx.complete(node, model, request)
        if schema is None:
            # leading spaces and trailing newlines are noise in training data
            return completion.text.strip(), completion.finish_reason
        try:
            return schema.parse(completion.text), completion.finish_reason
        except RecordError as error:
            if completion.finish_reason == "length":  # the same budget would be cut again
                params, first_budget = _larger_budget(ctx, node, model, params, error, first_budget)
                continue
            attempts += 1
            if attempts > parse_retries:
                error.attempts = attempts  # type: ignore[attr-defined]
                raise
            if conversation is not None:
                conversation += [{"role": "assistant", "content": completion.text}, schema.retry_message(error)]


def _larger_budget(ctx: RunContext, node: str, model: str, params: dict[str, Any], error: RecordError,
                   retried: int | None) -> tuple[dict[str, Any], int]:
    """The params for the one retry of a JSON reply cut off by max_tokens (finish_reason "length"), and the
    budget that was cut; or the `RecordError` saying the budget is too small, when the retry was cut too
    (`retried`: the first budget) or the budget is not known."""
    config = ctx.models.configs.get(model)
    budget = params.get("max_tokens", config.params.get("max_tokens") if config else None)
    where = f"nodes.{node}.params.max_tokens"
    if retried is not None or not isinstance(budget, int):
        said = f"max_tokens {budget}" if budget is not None else "the server's default max_tokens"
        raise RecordError(f"the JSON reply was cut off by max_tokens (finish_reason 'length', {said}"
                          f"{', asked again after a cut at ' + str(retried) if retried else ''}) before it was "
                          f"complete ({error}); raise {where}")
    larger = max(min(budget * CUT_BUDGET_FACTOR, CUT_BUDGET_CAP), budget + 1)
    if (id(ctx), node) not in _budget_warned:
        _budget_warned.add((id(ctx), node))
        log.warning("node '%s': a JSON reply was cut off by max_tokens (finish_reason 'length', max_tokens %d); "
                    "asking once more with max_tokens %d (set %s to fit the schema)", node, budget, larger, where)
    return {**params, "max_tokens": larger}, budget

"""One LLM generation as nodes need it: messages in, text (or a schema-checked object) out, with the
model shown its mistake and asked again when a structured reply does not parse. A raw prompt is the
user's own text, so a bad reply to it is not answered in it: the prompt is sampled again instead."""
from __future__ import annotations

from typing import Any

from .context import RunContext
from .errors import RecordError
from .models.base import LLMRequest
from .structured import OutputSchema

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
            attempts += 1
            if attempts > parse_retries:
                error.attempts = attempts  # type: ignore[attr-defined]
                raise
            if conversation is not None:
                conversation += [{"role": "assistant", "content": completion.text}, schema.retry_message(error)]

"""What every model client takes and gives back, whatever the backend."""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

call_owner: ContextVar[str] = ContextVar("call_owner", default="")
"""The record a call is made for (set by the scheduler per record task), and which retry of it when
`--resume` takes up a failed record again. A batch line's `custom_id` includes it, so a retried record's
calls are new lines rather than the failed attempts the batch ledger would answer again, and without the
response cache (`--no-cache`) identical prompts of two records are two lines, as they are two calls
synchronously. (With it, the model pool lets the second wait for the first's answer: one line.)"""


@dataclass(frozen=True)
class LLMRequest:
    """One generation. `messages` for chat, `prompt` for raw completions (Magpie, micro-batching).

    `sample` tells apart the n-th sample of the same request, so a response cache can hold n answers.
    `tools` (OpenAI function schemas) and `tool_choice` ask a server for native tool calls; the messages
    may then hold assistant `tool_calls` and `tool` results.
    """

    messages: tuple[dict[str, Any], ...] | None = None
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    sample: int = 0
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def cache_payload(self) -> dict[str, Any]:
        payload = {"messages": self.messages, "prompt": self.prompt, "params": self.params,
                   "json_schema": self.json_schema, "sample": self.sample}
        if self.tools is not None:  # only then: the keys of requests without tools stay as they were
            payload.update(tools=self.tools, tool_choice=self.tool_choice)
        return payload


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    latency: float = 0.0
    attempts: int = 1
    cached: bool = False
    tool_calls: list[dict[str, Any]] | None = None
    """Native tool calls, as the OpenAI API gives them ({id, type: function, function: {name, arguments}})."""
    batched: bool = False
    """Answered through a provider's Batch API (priced apart: see `UsageStats`)."""


class ModelClient(Protocol):
    name: str

    async def complete(self, request: LLMRequest) -> Completion: ...

    async def close(self) -> None: ...

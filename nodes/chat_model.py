"""A LangChain chat model that calls synthloom's model layer, so a LangGraph agent's calls are cached,
rate-limited, retried and counted like every other node's, on any backend.

Tool calls use a JSON reply checked against a schema, not the server's native `tools` API: that works the
same on every backend (the embedded llama.cpp model too, whose grammar enforces the schema), and our model
layer returns text. Each reply is either {"tool": name, "arguments": {...}} or {"answer": text}; a reply that
does not parse is shown to the model with the error and asked again (`synthloom.engine.generate`). The
protocol is `synthloom.tools.protocol`, which the `llm` node's tool loop speaks too.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field
from synthloom.engine.generate import generate
from synthloom.graph.context import RunContext
from synthloom.tools import protocol

ANSWERED = "synthloom_answer"
"""Set in the response metadata of a final answer; LangGraph's own step-limit message lacks it."""

__all__ = ["ContextChatModel", "is_final_answer", "trl_messages"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


class ContextChatModel(BaseChatModel):
    """Chat model whose every call is `ctx.complete(node, model_name, ...)`. Async only: agents run with
    `ainvoke` on the run's event loop."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ctx: RunContext
    node: str
    model_name: str
    call_params: dict[str, Any] = Field(default_factory=dict)
    parse_retries: int = 2

    @property
    def _llm_type(self) -> str:
        return "synthloom"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(tool)["function"] for tool in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise TypeError("ContextChatModel is async only; call it with ainvoke")

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        tools: list[dict[str, Any]] = kwargs.get("tools") or []
        conversation = _protocol_messages(messages, tools)
        if not tools:
            text = await generate(self.ctx, node=self.node, model=self.model_name, messages=conversation,
                                  params=self.call_params)
            return _result(AIMessage(content=text, response_metadata={ANSWERED: True}))
        reply = await generate(self.ctx, node=self.node, model=self.model_name, messages=conversation,
                               params=self.call_params, schema=protocol.reply_schema(tools),
                               parse_retries=self.parse_retries)
        if "answer" in reply:
            return _result(AIMessage(content=reply["answer"], response_metadata={ANSWERED: True}))
        call = {"name": reply["tool"], "args": reply["arguments"], "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "tool_call"}
        return _result(AIMessage(content="", tool_calls=[call]))


def _result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])


def _protocol_messages(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """LangChain messages as plain chat turns that speak the JSON protocol (tool calls and results as text)."""
    rendered: list[dict[str, str]] = []
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            rendered += [{"role": "assistant", "content": protocol.call_text(call["name"], call["args"])}
                         for call in message.tool_calls]
        elif isinstance(message, AIMessage) and tools:
            rendered.append({"role": "assistant", "content": json.dumps({"answer": message.text})})
        elif isinstance(message, ToolMessage):
            rendered.append({"role": "user", "content": protocol.result_text(str(message.name), message.text)})
        else:
            rendered.append({"role": _ROLES.get(message.type, "user"), "content": message.text})
    return protocol.with_instructions(rendered, tools) if tools else rendered


def trl_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages in TRL's conversational format, tool calls and tool results included."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        entry: dict[str, Any] = {"role": _ROLES.get(message.type, message.type), "content": message.text}
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [{"type": "function", "function": {"name": call["name"],
                                                                     "arguments": call["args"]}}
                                   for call in message.tool_calls]
        if isinstance(message, ToolMessage):
            entry["name"] = message.name
        converted.append(entry)
    return converted


def is_final_answer(message: BaseMessage) -> bool:
    return isinstance(message, AIMessage) and not message.tool_calls and \
        bool(message.response_metadata.get(ANSWERED))


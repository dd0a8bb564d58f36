"""The tool loop of an `llm` node: model -> tool calls -> run them -> results back to the model, until it
answers or `max_rounds` model turns have called tools. Two ways to ask for calls:

- `native`: the OpenAI API's `tools`/`tool_choice`, the server's own `tool_calls` (any OpenAI-compatible
  server that supports them);
- `json`: the constrained-JSON protocol (`protocol`), one call per turn, for the embedded model and servers
  without native tool calls.

Either way the record gets the same trajectory in TRL's tool-calling format (assistant `tool_calls` with
arguments as objects, `tool` role results), every call goes through the toolbox's limits, a failed call's
error is fed back to the model as its result, and each call is added to the record's trace."""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ModelCallError, RecordError
from ..graph.context import RunContext, current_step, record_usage
from ..models.base import LLMRequest
from ..tools import protocol
from ..tools.definitions import Tool
from ..tools.toolbox import Toolbox, ToolResult
from .generate import generate

ToolChoice = Literal["auto", "required", "none"]
Mode = Literal["native", "json"]

log = logging.getLogger("synthloom.tools")


@dataclass
class Trajectory:
    """What a tool loop made: the conversation as TRL takes it, the tools' schemas (TRL's `tools` column),
    the final answer, and each call with its outcome (for verification)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    answer: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0


async def run_tool_loop(ctx: RunContext, toolbox: Toolbox, *, node: str, model: str,
                        messages: list[dict[str, Any]], tools: list[Tool], tool_choice: ToolChoice = "auto",
                        max_rounds: int = 4, params: dict[str, Any] | None = None, parse_retries: int = 2,
                        mode: Mode = "native") -> Trajectory:
    loop = _Loop(ctx, toolbox, node, model, tools, params or {}, spent_this_record())
    if mode == "native" and model not in toolbox.native_refused:
        trajectory = _fresh(messages, tools)
        try:
            await loop.native(trajectory, tool_choice, max_rounds)
            return trajectory
        except ModelCallError as error:
            if error.retryable or "tool" not in str(error).lower() or trajectory.calls:
                raise
            if model not in toolbox.native_refused:
                toolbox.native_refused.add(model)
                log.warning("model '%s': the server refused native tool calls (%s); asking for them as "
                            "constrained JSON for the rest of the run (set models.%s.tool_calls: json to skip "
                            "the first try)", model, error, model)
    trajectory = _fresh(messages, tools)
    await loop.constrained(trajectory, tool_choice, max_rounds, parse_retries)
    return trajectory


def _fresh(messages: list[dict[str, Any]], tools: list[Tool]) -> Trajectory:
    return Trajectory(messages=[dict(message) for message in messages], tools=[tool.schema() for tool in tools])


def tool_mode(ctx: RunContext, model: str) -> Mode:
    """How `model` is asked for tool calls: its `tool_calls` setting; `auto` is native on the openai backend
    (OpenAI-compatible servers), constrained JSON on the embedded and vLLM engines."""
    config = ctx.models.configs.get(model)
    if config is None or config.tool_calls == "auto":
        return "native" if config is not None and config.backend == "openai" else "json"
    return config.tool_calls


def spent_this_record() -> dict[str, int]:
    """This record's calls per tools entry, shared by its nodes (the per-record budget)."""
    usage = record_usage.get()
    return usage.tool_calls if usage is not None else {}


class _Loop:
    def __init__(self, ctx: RunContext, toolbox: Toolbox, node: str, model: str, tools: list[Tool],
                 params: dict[str, Any], spent: dict[str, int]):
        self.ctx, self.toolbox, self.node, self.model, self.params = ctx, toolbox, node, model, params
        self.by_name = {tool.name: tool for tool in tools}
        self.spent = spent

    async def run(self, round_number: int, name: str, arguments: Any) -> ToolResult:
        tool = self.by_name.get(name)
        if tool is None:
            result = ToolResult(f"there is no tool named '{name}' (tools: {', '.join(self.by_name)})", ok=False)
        else:
            result = await self.toolbox.call(tool, arguments, self.spent)
        step = current_step.get()
        if step is not None:
            step.add_tool_call(round_number, name, arguments, result.text, result.ok, result.seconds)
        return result

    async def native(self, trajectory: Trajectory, tool_choice: ToolChoice, max_rounds: int) -> None:
        conversation = [dict(message) for message in trajectory.messages]
        schemas = tuple(trajectory.tools)
        for round_number in range(max_rounds + 1):
            last = round_number == max_rounds
            choice = "none" if last else (tool_choice if round_number == 0 else "auto")
            request = LLMRequest(messages=tuple(conversation), params=self.params, tools=schemas, tool_choice=choice)
            completion = await self.ctx.complete(self.node, self.model, request)
            if not completion.tool_calls or choice == "none":
                if completion.tool_calls:
                    raise RecordError(f"the model still called tools after max_tool_rounds ({max_rounds})")
                _answer(trajectory, completion.text)
                return
            trajectory.rounds += 1
            calls = [_native_call(call) for call in completion.tool_calls]
            conversation.append({"role": "assistant", "content": completion.text or "",
                                 "tool_calls": [call["wire"] for call in calls]})
            trajectory.messages.append({"role": "assistant", "content": completion.text.strip(),
                                        "tool_calls": [call["trl"] for call in calls]})
            for call in calls:
                arguments = call["trl"]["function"]["arguments"]
                result = await self.run(round_number, call["name"], arguments) if call["parsed"] else \
                    ToolResult(f"the arguments are not valid JSON: {arguments}", ok=False)
                self._record(trajectory, round_number, call["name"], arguments, result, call["id"])
                conversation.append({"role": "tool", "tool_call_id": call["id"], "content": _fed_back(result)})

    async def constrained(self, trajectory: Trajectory, tool_choice: ToolChoice, max_rounds: int,
                          parse_retries: int) -> None:
        functions = [schema["function"] for schema in trajectory.tools]
        conversation = protocol.with_instructions(trajectory.messages, functions)
        for round_number in range(max_rounds + 1):
            last = round_number == max_rounds or tool_choice == "none"
            schema = protocol.reply_schema([] if last else functions,
                                           answer=not (round_number == 0 and tool_choice == "required"))
            reply = await generate(self.ctx, node=self.node, model=self.model, messages=conversation,
                                   params=self.params, schema=schema, parse_retries=parse_retries)
            if "answer" in reply:
                _answer(trajectory, str(reply["answer"]))
                return
            trajectory.rounds += 1
            name, arguments, call_id = reply["tool"], reply["arguments"], _call_id()
            trajectory.messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]})
            result = await self.run(round_number, name, arguments)
            self._record(trajectory, round_number, name, arguments, result, call_id)
            conversation += [{"role": "assistant", "content": protocol.call_text(name, arguments)},
                             {"role": "user", "content": protocol.result_text(name, _fed_back(result))}]
        raise RecordError(f"the model gave no answer within max_tool_rounds ({max_rounds})")

    @staticmethod
    def _record(trajectory: Trajectory, round_number: int, name: str, arguments: Any, result: ToolResult,
                call_id: str) -> None:
        trajectory.messages.append({"role": "tool", "name": name, "tool_call_id": call_id,
                                    "content": _fed_back(result)})
        trajectory.calls.append({"round": round_number, "name": name, "arguments": arguments, "ok": result.ok,
                                 "result": result.text})


def _answer(trajectory: Trajectory, text: str) -> None:
    trajectory.answer = text.strip()
    trajectory.messages.append({"role": "assistant", "content": trajectory.answer})


def _fed_back(result: ToolResult) -> str:
    return result.text if result.ok else f"error: {result.text}"


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


def _native_call(call: dict[str, Any]) -> dict[str, Any]:
    """A server's tool call as sent back to it (`wire`, arguments a JSON string) and as TRL keeps it (`trl`,
    arguments an object; the raw text when it is not JSON, `parsed` False)."""
    function = call["function"]
    call_id = str(call.get("id") or _call_id())
    raw = function.get("arguments")
    parsed = True
    if isinstance(raw, str):
        try:
            arguments: Any = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            arguments, parsed = raw, False
    else:
        arguments = raw if raw is not None else {}
    wire_arguments = raw if isinstance(raw, str) else json.dumps(arguments)
    return {"id": call_id, "name": function["name"], "parsed": parsed,
            "wire": {"id": call_id, "type": "function", "function": {"name": function["name"],
                                                                      "arguments": wire_arguments}},
            "trl": {"id": call_id, "type": "function", "function": {"name": function["name"],
                                                                     "arguments": arguments}}}

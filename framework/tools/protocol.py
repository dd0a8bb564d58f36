"""Tool calls as constrained JSON, for models without native `tool_calls` (the embedded llama.cpp model,
whose grammar enforces the schema; any server through structured output). Each reply is either
{"tool": name, "arguments": {...}} (its arguments fit that tool's schema) or {"answer": text}. The `agent`
node's chat model speaks the same protocol."""
from __future__ import annotations

import json
from typing import Any

from ..structured import OutputSchema


def reply_schema(functions: list[dict[str, Any]], *, answer: bool = True) -> OutputSchema:
    """The schema of one reply: a call of one of `functions` ({name, description, parameters}), or, unless
    `answer` is False (tool_choice required), the answer."""
    calls = [{"type": "object", "properties": {"tool": {"const": function["name"]},
                                               "arguments": function.get("parameters") or {"type": "object"}},
              "required": ["tool", "arguments"], "additionalProperties": False} for function in functions]
    final = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
             "additionalProperties": False}
    return OutputSchema({"anyOf": [*calls, final] if answer else calls})


def instructions(functions: list[dict[str, Any]]) -> str:
    listing = "\n".join(f"- {function['name']}: {function.get('description', '')} Arguments (JSON Schema): "
                        f"{json.dumps(function.get('parameters', {}))}" for function in functions)
    return ("You can use tools. To call one, reply with only a JSON object "
            '{"tool": "<name>", "arguments": {...}}; its result comes back in the next message. '
            'When you can answer, reply with only {"answer": "<your answer>"}.\n'
            f"Tools:\n{listing}")


def call_text(name: str, arguments: Any) -> str:
    return json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)


def result_text(name: str, text: str) -> str:
    return f"Result of {name}: {text}"


def with_instructions(messages: list[dict[str, Any]], functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with the protocol's instructions added to its system message (or as one)."""
    rendered = list(messages)
    if rendered and rendered[0]["role"] == "system":
        rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{instructions(functions)}"}
    else:
        rendered.insert(0, {"role": "system", "content": instructions(functions)})
    return rendered

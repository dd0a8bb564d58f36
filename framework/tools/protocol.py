"""Tool calls as constrained JSON, for models without native `tool_calls` (the embedded llama.cpp model,
whose grammar enforces the schema; any server through structured output). Each reply is either
{"tool": name, "arguments": {...}} (its arguments fit that tool's schema) or {"answer": text}. The `agent`
node's chat model speaks the same protocol."""
from __future__ import annotations

import copy
import json
from typing import Any

from ..graph.output_schema import OutputSchema

ARGUMENT_CHARS = 200
ANSWER_CHARS = 2000
"""Longest string argument and answer the protocol's schema lets a reply hold: a small model under a grammar
otherwise writes one string until max_tokens cuts the JSON off (a schema that sets its own maxLength keeps it)."""


def reply_schema(functions: list[dict[str, Any]], *, answer: bool = True) -> OutputSchema:
    """The schema of one reply: a call of one of `functions` ({name, description, parameters}), or, unless
    `answer` is False (tool_choice required), the answer."""
    calls = [{"type": "object", "properties": {"tool": {"const": function["name"]},
                                               "arguments": _bounded(function.get("parameters") or
                                                                     {"type": "object"})},
              "required": ["tool", "arguments"], "additionalProperties": False} for function in functions]
    final = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": ANSWER_CHARS}},
             "required": ["answer"], "additionalProperties": False}
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


def _bounded(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters' schema with a `maxLength` on each string property that has none."""
    bounded = copy.deepcopy(parameters)
    for prop in (bounded.get("properties") or {}).values():
        if isinstance(prop, dict) and prop.get("type") == "string" and "maxLength" not in prop:
            prop["maxLength"] = ARGUMENT_CHARS
    return bounded

"""What a tool is to the rest of synthloom: a name, a description, a JSON schema of its arguments and a way
to call it, whatever stands behind it (a Python function or an MCP server). The schema is what the model
sees (native `tools`, or the constrained-JSON protocol) and what the trajectory's `tools` column holds."""
from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .threads import ToolThreads

Invoke = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class Tool:
    """One callable tool. `entry` is the graph's `tools:` entry it came from, whose limits it keeps."""

    name: str
    description: str
    parameters: dict[str, Any]
    entry: str
    invoke: Invoke

    def schema(self) -> dict[str, Any]:
        """The tool as OpenAI's API and TRL's `tools` column take it."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def python_tool(function: Callable[..., Any], entry: str, threads: ToolThreads) -> Tool:
    """A Python function as a tool: its typed signature and docstring give the schema (LangChain's reading
    of Google-style `Args:` sections); a sync function runs on one of its entry's `threads`, off the event
    loop and off the loop's default executor (see `threads`)."""
    from langchain_core.utils.function_calling import convert_to_openai_function  # only graphs with tools pay
    spec = convert_to_openai_function(function)
    parameters = spec.get("parameters") or {"type": "object", "properties": {}}

    async def invoke(arguments: dict[str, Any]) -> str:
        if inspect.iscoroutinefunction(function):
            result = await function(**arguments)
        else:
            result = await threads.run(spec["name"], function, arguments)
        return as_text(result)

    return Tool(spec["name"], spec.get("description") or spec["name"].replace("_", " "), parameters, entry,
                invoke)


def as_text(result: Any) -> str:
    """A tool's result as the text the model reads: strings as they are, anything else as JSON."""
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, default=str)

"""`agent`: a tool-using agent, LangGraph's prebuilt ReAct loop with the tools a graph names, whose model calls
go through synthloom's model layer (`ContextChatModel`). Writes the final answer and, if asked, the whole
exchange with its tool calls as TRL messages (tool-use training data)."""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.errors import GraphRecursionError
from langgraph.prebuilt import create_react_agent
from pydantic import Field
from synthloom.config import ceilings
from synthloom.engine.tool_loop import spent_this_record
from synthloom.errors import ConfigError, RecordError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeParams
from synthloom.graph.registry import import_object
from synthloom.sandbox.templates import Template
from synthloom.tools import Tool, Toolbox

from .chat_model import ContextChatModel, is_final_answer, trl_messages


class AgentParams(NodeParams):
    model: str = Field(default="default", description="a name under models:")
    tools: list[str] = Field(min_length=1, description="package.module:function each (sync or async), whose "
                             "docstring and typed parameters tell the model how to call it; or the name of one "
                             "of the graph's tools: entries (Python functions or an MCP server), whose limits "
                             "then apply")
    input: str = Field(description="template of the task the agent is given (its user message)")
    system: str | None = Field(default=None, description="template of the agent's system prompt")
    output: str = Field(default="answer", description="state key for the final answer")
    trace: str | None = Field(default=None, description="state key for the whole exchange as TRL messages, "
                              "tool calls and results included")
    max_steps: int = Field(default=5, ge=1, le=ceilings.MAX_STEPS,
                           description="most tool calls; a record needing more fails")
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the model's params")
    parse_retries: int = Field(default=2, ge=0, le=ceilings.MAX_RETRIES,
                               description="retries of a reply that is not valid JSON")


class Agent(Node[AgentParams]):
    """A LangGraph ReAct agent with Python tools; its model calls are cached and counted like any node's."""

    def __init__(self, name: str, params: AgentParams):
        super().__init__(name, params)
        self.tools = [_tool(path, f"nodes.{name}.tools.{index}") for index, path in enumerate(params.tools)
                      if ":" in path]
        self.entries = [path for path in params.tools if ":" not in path]
        _check_unique(self.tools)
        self.input = Template(params.input)
        self.system = Template(params.system) if params.system else None
        self.agent: Any = None

    def reads(self) -> set[str]:
        return set(self.input.variables) | (set(self.system.variables) if self.system else set())

    def writes(self) -> set[str]:
        return {self.params.output} | ({self.params.trace} if self.params.trace else set())

    def models(self) -> set[str]:
        return {self.params.model}

    def tool_entries(self) -> set[str]:
        return set(self.entries)

    async def setup(self, ctx: RunContext) -> None:
        """Build the agent once per run; records share it (it keeps no state between invocations)."""
        if self.entries:
            await ctx.tools.start(self.entries)
            self.tools = [tool for tool in self.tools if not (tool.metadata or {}).get("from_entry")]
            self.tools += [_entry_tool(tool, ctx.tools) for tool in ctx.tools.tools(self.entries)]
            _check_unique(self.tools)
        chat = ContextChatModel(ctx=ctx, node=self.name, model_name=self.params.model, call_params=self.params.params,
                                parse_retries=self.params.parse_retries)
        with warnings.catch_warnings():  # moved to langchain.agents, which we do not depend on
            warnings.simplefilter("ignore", DeprecationWarning)
            self.agent = create_react_agent(chat, self.tools)

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        if self.agent is None:
            raise RuntimeError("agent node run before its setup")
        messages: list[BaseMessage] = [SystemMessage(self.system.render(state))] if self.system else []
        messages.append(HumanMessage(self.input.render(state)))
        limit = 2 * self.params.max_steps + 2  # a model call and a tool call per step, and the answer
        try:
            final = await self.agent.ainvoke({"messages": messages}, {"recursion_limit": limit})
        except GraphRecursionError:
            final = None
        if final is None or not is_final_answer(final["messages"][-1]):
            raise RecordError(f"the agent did not answer within max_steps ({self.params.max_steps} tool calls)")
        updates: dict[str, Any] = {self.params.output: final["messages"][-1].text}
        if self.params.trace:
            updates[self.params.trace] = trl_messages(final["messages"])
        return updates


def _tool(path: str, key: str) -> BaseTool:
    try:
        found = import_object(path)
    except ConfigError as error:
        raise ConfigError(error.message, key=key) from None
    if isinstance(found, BaseTool):
        return found
    if not callable(found):
        raise ConfigError(f"'{path}' is not a function", key=key)
    description = inspect.getdoc(found) or found.__name__.replace("_", " ")
    if inspect.iscoroutinefunction(found):
        return StructuredTool.from_function(coroutine=found, description=description)
    return StructuredTool.from_function(found, description=description)


def _check_unique(tools: list[BaseTool]) -> None:
    names = [tool.name for tool in tools]
    if len(set(names)) < len(names):
        raise ValueError(f"tools: two tools are named alike ({', '.join(names)})")


def _entry_tool(tool: Tool, toolbox: Toolbox) -> BaseTool:
    """A tool of the graph's `tools:` entries as a LangChain tool: its schema as it is, its calls through the
    toolbox (timeout, per-record budget, size cap), a failed call's error returned to the agent as its
    result, as the llm node's tool loop does."""
    async def call(**arguments: Any) -> str:
        result = await toolbox.call(tool, arguments, spent_this_record())
        return result.text if result.ok else f"error: {result.text}"

    made = StructuredTool.from_function(coroutine=call, name=tool.name, description=tool.description,
                                        args_schema=tool.parameters)
    made.metadata = {"from_entry": tool.entry}
    return made

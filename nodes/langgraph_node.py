"""`langgraph`: a user's compiled LangGraph graph as one node. Record keys are mapped into the app's input
state and keys of its final state back out; LangChain messages come back as TRL {role, content} dicts so
they can be written to JSONL."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from pydantic import Field
from synthloom.config import ceilings
from synthloom.errors import ConfigError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeParams
from synthloom.graph.registry import import_object

from .chat_model import trl_messages
from .state_map import KeyMap, pick


class LangGraphParams(NodeParams):
    graph: str = Field(description="package.module:app, a compiled LangGraph graph (a StateGraph is compiled)")
    inputs: KeyMap = Field(description="{app state key: our key}: the app's input state")
    outputs: KeyMap = Field(description="{our key: app state key}: what comes back from its final state")
    recursion_limit: int | None = Field(default=None, ge=1, le=ceilings.MAX_RECURSION,
                                        description="LangGraph's step limit per record")


class LangGraphNode(Node[LangGraphParams]):
    """Run a compiled LangGraph app on the record (ainvoke), with its state mapped in and out."""

    def __init__(self, name: str, params: LangGraphParams):
        super().__init__(name, params)
        try:
            app = import_object(params.graph)
        except ConfigError as error:
            raise ConfigError(error.message, key=f"nodes.{name}.graph") from None
        if hasattr(app, "compile") and not hasattr(app, "ainvoke"):
            app = app.compile()
        if not hasattr(app, "ainvoke"):
            raise ValueError(f"graph: '{params.graph}' is not a LangGraph graph (no ainvoke); give the "
                             f"compiled app, e.g. app = builder.compile()")
        self.app = app

    def reads(self) -> set[str]:
        return set(self.params.inputs.values())

    def writes(self) -> set[str]:
        return set(self.params.outputs)

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        config = {"recursion_limit": self.params.recursion_limit} if self.params.recursion_limit else None
        final = await self.app.ainvoke(pick(state, self.params.inputs, f"langgraph '{self.name}' inputs"), config)
        values = pick(final, self.params.outputs, f"langgraph '{self.name}' outputs")
        return {key: _plain(value) for key, value in values.items()}


def _plain(value: Any) -> Any:
    """LangChain messages as TRL dicts; anything else as the app gave it."""
    if isinstance(value, BaseMessage):
        return trl_messages([value])[0]
    if isinstance(value, list) and value and all(isinstance(item, BaseMessage) for item in value):
        return trl_messages(value)
    return value

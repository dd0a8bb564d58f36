"""`python`: any function as a node, named in the YAML (`function: package.module:func`) instead of written as
a node type. The function is wrapped by `synthloom.node` exactly as `@node` would, so the two never drift:
positional parameters are the state keys it reads, keyword-only ones come from `args:`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError
from synthloom.errors import ConfigError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeFunction, NodeParams, node_type_of
from synthloom.graph.registry import import_object


class PythonParams(NodeParams):
    function: str = Field(description="package.module:function (sync or async); its positional parameters "
                          "are the state keys it reads")
    output: str | None = Field(default=None, description="state key for the return value; without it the "
                               "function returns a dict of state updates (or None, or Drop)")
    args: dict[str, Any] = Field(default_factory=dict, description="values of its keyword-only parameters")
    writes: list[str] | None = Field(default=None, description="without output: the keys its returned dict "
                                     "sets, so the graph can be checked")


class PythonNode(Node[PythonParams]):
    """Run a Python function (sync or async) on the record; its parameters name the state keys it reads."""

    def __init__(self, name: str, params: PythonParams):
        super().__init__(name, params)
        try:
            target = import_object(params.function)
        except ConfigError as error:
            raise ConfigError(error.message, key=f"nodes.{name}.function") from None
        node_type: type[Node[Any]]
        if isinstance(target, NodeFunction):
            node_type = target.node_type  # already a node type (@node)
        elif isinstance(target, type) and issubclass(target, Node):
            node_type = target  # a Node subclass
        elif callable(target):
            node_type = node_type_of(target, writes=params.writes)
        else:
            raise ValueError(f"function: '{params.function}' is not a function")
        options = {**params.args, **({"output": params.output} if params.output else {})}
        try:
            self.inner = node_type(name, node_type.Params.model_validate(options))
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"args.{key}: {first['msg']} (the function's keyword-only parameters are: "
                             f"{', '.join(k for k in node_type.Params.model_fields if k != 'output') or 'none'})") \
                from None

    def reads(self) -> set[str]:
        return self.inner.reads()

    def writes(self) -> set[str]:
        return self.inner.writes()

    def models(self) -> set[str]:
        return self.inner.models()

    async def setup(self, ctx: RunContext) -> None:
        await self.inner.setup(ctx)

    async def teardown(self, ctx: RunContext) -> None:
        await self.inner.teardown(ctx)

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> Any:
        return await self.inner(state, ctx)

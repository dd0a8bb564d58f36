"""The plugin API: what a node type is, and the `@node` decorator that makes one from a function.

A node reads a record's state and returns an update (a dict merged into the state), `None` (no change)
or `Drop(reason)` (the record leaves the run, counted by reason). Nodes may be sync or async; sync ones
run in a worker thread so they never block the event loop.
"""
from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, create_model

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["ANY_KEY", "Drop", "Node", "NodeParams", "node"]

ANY_KEY = "*"
"""Put in `writes()` when a node's output keys are not known before it runs."""


class NodeParams(BaseModel):
    """Base for a node type's parameters; unknown YAML keys are errors."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass(frozen=True)
class Drop:
    """Returned by a node to take the record out of the run on purpose (a filter, a duplicate)."""

    reason: str
    detail: dict[str, Any] | None = None


class Node:
    """Base class of every node type. Subclass it, give a `Params` model, write `run`.

    `reads`/`writes`/`models` let the graph be checked before any call: a template variable that no
    upstream node writes is an error at validation time, not record 1,000.
    """

    Params: ClassVar[type[NodeParams]] = NodeParams
    description: ClassVar[str] = ""
    """What `synthloom nodes` shows; by default the class docstring."""

    _run_is_async: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "description" not in cls.__dict__:
            cls.description = inspect.getdoc(cls) or ""
        cls._run_is_async = inspect.iscoroutinefunction(cls.run)  # asked once, not on every step

    def __init__(self, name: str, params: NodeParams):
        self.name = name
        self.params = params

    def reads(self) -> set[str]:
        return set()

    def writes(self) -> set[str]:
        return set()

    def models(self) -> set[str]:
        return set()

    async def setup(self, ctx: RunContext) -> None:
        """Once per run, before the first record (build an agent, open an index)."""

    async def teardown(self, ctx: RunContext) -> None:
        """Once per run, after the last record (persist an index)."""

    def run(self, state: Mapping[str, Any], ctx: RunContext) -> Any:
        raise TypeError(f"node type {type(self).__name__} does not define run()")

    async def __call__(self, state: Mapping[str, Any], ctx: RunContext) -> Any:
        if self._run_is_async:
            return await self.run(state, ctx)
        return await asyncio.to_thread(self.run, state, ctx)


_SPECIAL_ARGS = {"state", "ctx"}


def node(func: Callable[..., Any] | None = None, *, writes: list[str] | None = None,
         name: str | None = None) -> Any:
    """Turn a function into a node type.

    Positional parameters are state keys the node reads; keyword-only parameters become YAML params;
    `state` and `ctx` receive the whole state and the run context. Return a dict (merged into the state)
    or any value with `output: key` in the YAML. `writes` names the keys a returned dict sets; without it
    they are read from a TypedDict return annotation (`-> Counted`), else they are unknown and the graph
    check cannot vouch for keys read after this node.
    """

    def wrap(fn: Callable[..., Any]) -> type[Node]:
        signature = inspect.signature(fn)
        state_keys = [p.name for p in signature.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _SPECIAL_ARGS]
        option_fields: dict[str, Any] = {
            p.name: (p.annotation if p.annotation is not p.empty else Any,
                     ... if p.default is p.empty else p.default)
            for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in _SPECIAL_ARGS}
        option_fields["output"] = (str | None, None)
        params_model = create_model(f"{fn.__name__}_params", __base__=NodeParams, **option_fields)
        wants = {special for special in _SPECIAL_ARGS if special in signature.parameters}
        is_async = inspect.iscoroutinefunction(fn)
        declared_writes = set(writes) if writes is not None else _typed_dict_keys(fn)

        def _arguments(self: Node, state: Mapping[str, Any], ctx: Any) -> dict[str, Any]:
            kwargs = {key: state[key] for key in state_keys}
            kwargs.update({key: getattr(self.params, key) for key in option_fields if key != "output"})
            if "state" in wants:
                kwargs["state"] = state
            if "ctx" in wants:
                kwargs["ctx"] = ctx
            return kwargs

        def _output(self: Node) -> str | None:
            output: str | None = getattr(self.params, "output", None)
            return output

        def _shape(self: Node, result: Any) -> Any:
            output = _output(self)
            if output is not None and not isinstance(result, Drop):
                return {output: result}
            return result

        if is_async:
            async def run(self: Node, state: Mapping[str, Any], ctx: Any) -> Any:
                return _shape(self, await fn(**_arguments(self, state, ctx)))
        else:
            def run(self: Node, state: Mapping[str, Any], ctx: Any) -> Any:  # type: ignore[misc]
                return _shape(self, fn(**_arguments(self, state, ctx)))

        def node_writes(self: Node) -> set[str]:
            output = _output(self)
            if output is not None:
                return {output}
            return set(declared_writes) if declared_writes is not None else {ANY_KEY}

        attributes = {
            "Params": params_model, "description": (inspect.getdoc(fn) or "").split("\n\n")[0],
            "run": run, "reads": lambda self: set(state_keys), "writes": node_writes,
            "__module__": fn.__module__, "__doc__": fn.__doc__, "function": staticmethod(fn),
        }
        return type(name or fn.__name__, (Node,), attributes)

    return wrap(func) if func is not None else wrap


def _typed_dict_keys(fn: Callable[..., Any]) -> set[str] | None:
    """The keys of a `-> SomeTypedDict` return annotation; None when the function does not say."""
    try:
        returned = typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation naming something not importable: treat as unsaid
        return None
    if returned is not None and typing.is_typeddict(returned):
        return set(typing.get_type_hints(returned))
    return None

"""The plugin API: what a node type is, and the `@node` decorator that makes one from a function.

A node reads a record's state and returns an update (a dict merged into the state), `None` (no change)
or `Drop(reason)` (the record leaves the run, counted by reason). Nodes may be sync or async; sync ones
run in a worker thread so they never block the event loop.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar, cast, overload

from pydantic import BaseModel, ConfigDict, create_model

from ..errors import RecordError

if TYPE_CHECKING:
    from .context import RunContext

__all__ = ["ANY_KEY", "Drop", "Node", "NodeFunction", "NodeParams", "node"]

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


P = TypeVar("P", bound=NodeParams)
"""A node type's parameters model: `class Shout(Node[ShoutParams])` types `self.params` as `ShoutParams`."""


class Node(Generic[P]):
    """Base class of every node type. Subclass `Node[MyParams]`, write `run`.

    `reads`/`writes`/`models` let the graph be checked before any call: a template variable that no
    upstream node writes is an error at validation time, not record 1,000. `Params` (the model the YAML is
    validated with) is taken from the generic base; a class may still set it itself.
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
        declared = _declared_params(cls)
        if declared is None:
            return
        if "Params" not in cls.__dict__:
            cls.Params = declared
        elif not issubclass(cls.Params, declared):
            raise TypeError(f"{cls.__name__}.Params ({cls.Params.__name__}) is not the {declared.__name__} "
                            f"its base Node[{declared.__name__}] says")

    def __init__(self, name: str, params: P):
        self.name = name
        self.params: P = params

    def reads(self) -> set[str]:
        return set()

    def writes(self) -> set[str]:
        return set()

    def tool_entries(self) -> set[str]:
        """The graph's `tools:` entries the node calls (checked before the run; started in its setup)."""
        return set()

    def models(self) -> set[str]:
        return set()

    async def setup(self, ctx: RunContext) -> None:
        """Once per run, before the first record (build an agent, open an index)."""

    async def teardown(self, ctx: RunContext) -> None:
        """Once per run, after the last record (persist an index)."""

    def run(self, state: Mapping[str, Any], ctx: RunContext) -> Any:
        raise TypeError(f"node type {type(self).__name__} does not define run()")

    def __call__(self, state: Mapping[str, Any], ctx: RunContext) -> Awaitable[Any]:
        """The run as an awaitable: an async `run`'s own coroutine (no wrapping frame to resume at every
        await), a sync one in a worker thread."""
        if self._run_is_async:
            return cast(Awaitable[Any], self.run(state, ctx))
        return asyncio.to_thread(self.run, state, ctx)


def _declared_params(cls: type) -> type[NodeParams] | None:
    """The params model named in a class's own generic base (`Node[ShoutParams]`); None when it names none."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = typing.get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, Node)):
            continue
        for arg in typing.get_args(base):
            if isinstance(arg, type) and issubclass(arg, NodeParams):
                return arg
    return None


_SPECIAL_ARGS = {"state", "ctx"}
_Args = ParamSpec("_Args")
_Result = TypeVar("_Result")


class NodeFunction(Generic[_Args, _Result]):
    """A function made a node by `@node`: still callable exactly as written (so it keeps its signature for
    type checkers and tests), and carrying the node type made from it in `node_type`."""

    def __init__(self, function: Callable[_Args, _Result], node_type: type[Node[Any]]) -> None:
        self.function = function
        self.node_type = node_type
        functools.update_wrapper(self, function)

    def __call__(self, *args: _Args.args, **kwargs: _Args.kwargs) -> _Result:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<node {self.node_type.__module__}:{self.node_type.__name__}>"


@overload
def node(func: Callable[_Args, _Result], *, writes: list[str] | None = None,
         name: str | None = None) -> NodeFunction[_Args, _Result]: ...


@overload
def node(func: None = None, *, writes: list[str] | None = None,
         name: str | None = None) -> Callable[[Callable[_Args, _Result]], NodeFunction[_Args, _Result]]: ...


def node(func: Callable[..., Any] | None = None, *, writes: list[str] | None = None,
         name: str | None = None) -> Any:
    """Turn a function into a node type.

    Positional parameters are state keys the node reads; keyword-only parameters become YAML params;
    `state` and `ctx` receive the whole state and the run context. Return a dict (merged into the state)
    or any value with `output: key` in the YAML. `writes` names the keys a returned dict sets; without it
    they are read from a TypedDict return annotation (`-> Counted`), else they are unknown and the graph
    check cannot vouch for keys read after this node. The decorated function stays a plain function to
    call; graphs name it like any node type.
    """

    def wrap(fn: Callable[_Args, _Result]) -> NodeFunction[_Args, _Result]:
        return NodeFunction(fn, node_type_of(fn, writes=writes, name=name))

    return wrap(func) if func is not None else wrap


def node_type_of(fn: Callable[..., Any], *, writes: list[str] | None = None,
                 name: str | None = None) -> type[Node[Any]]:
    """The node type `@node` makes from `fn` (see `node`)."""
    signature = inspect.signature(fn)
    state_keys = [p.name for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _SPECIAL_ARGS]
    option_fields: dict[str, Any] = {
        p.name: (p.annotation if p.annotation is not p.empty else Any,
                 ... if p.default is p.empty else p.default)
        for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in _SPECIAL_ARGS}
    option_fields["output"] = (str | None, None)
    params_model = create_model(f"{fn.__name__}_params", __base__=NodeParams, __module__=fn.__module__,
                                **option_fields)
    params_model.__qualname__ = f"{fn.__qualname__}.node_type.Params"  # found by pickle, as the class below
    wants = {special for special in _SPECIAL_ARGS if special in signature.parameters}
    is_async = inspect.iscoroutinefunction(fn)
    declared_writes = set(writes) if writes is not None else _typed_dict_keys(fn)

    def _arguments(self: Node[Any], state: Mapping[str, Any], ctx: Any) -> dict[str, Any]:
        kwargs = {key: state[key] for key in state_keys}
        kwargs.update({key: getattr(self.params, key) for key in option_fields if key != "output"})
        if "state" in wants:
            kwargs["state"] = state
        if "ctx" in wants:
            kwargs["ctx"] = ctx
        return kwargs

    def _output(self: Node[Any]) -> str | None:
        output: str | None = getattr(self.params, "output", None)
        return output

    def _shape(self: Node[Any], result: Any) -> Any:
        output = _output(self)
        if output is not None and not isinstance(result, Drop):
            return {output: result}
        if declared_writes is not None and isinstance(result, Mapping):
            undeclared = sorted(str(key) for key in result if key not in declared_writes)
            if undeclared:  # the graph was checked against the declared keys: a surprise here is a bug
                raise RecordError(f"node '{self.name}' returned {', '.join(map(repr, undeclared))}, which its "
                                  f"writes ({', '.join(sorted(declared_writes)) or 'none'}) do not declare; "
                                  f"declare it in @node(writes=[...]) or return only declared keys")
        return result

    if is_async:
        async def run(self: Node[Any], state: Mapping[str, Any], ctx: Any) -> Any:
            return _shape(self, await fn(**_arguments(self, state, ctx)))
    else:
        def run(self: Node[Any], state: Mapping[str, Any], ctx: Any) -> Any:  # type: ignore[misc]
            return _shape(self, fn(**_arguments(self, state, ctx)))

    def node_writes(self: Node[Any]) -> set[str]:
        output = _output(self)
        if output is not None:
            return {output}
        return set(declared_writes) if declared_writes is not None else {ANY_KEY}

    attributes = {
        "Params": params_model, "description": (inspect.getdoc(fn) or "").split("\n\n")[0],
        "run": run, "reads": lambda self: set(state_keys), "writes": node_writes,
        "__module__": fn.__module__, "__doc__": fn.__doc__, "function": staticmethod(fn),
        # where pickle finds the class by name: `@node` leaves a NodeFunction at the function's name
        "__qualname__": f"{fn.__qualname__}.node_type",
    }
    return type(name or fn.__name__, (Node,), attributes)


def _typed_dict_keys(fn: Callable[..., Any]) -> set[str] | None:
    """The keys of a `-> SomeTypedDict` return annotation; None when the function does not say."""
    try:
        returned = typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation naming something not importable: treat as unsaid
        return None
    if returned is not None and typing.is_typeddict(returned):
        return set(typing.get_type_hints(returned))
    return None

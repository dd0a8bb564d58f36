"""Find node types by name, and decide which Python a graph file may run.

A graph file may come from a stranger, and every `package.module:Name` it writes (a node `type`, a python
node's `function`, an agent's `tools`, a langgraph `graph`, a pairs `verifier`, an `output_schema` model) is
code. `CodePolicy` says which of those names may be imported, *before* importing anything:

- node types registered through the `synthloom.nodes` entry points (built-in and installed plugins), and the
  ready-made workflows' own modules (`synthloom_graphs`), which are part of synthloom;
- modules in the graph file's own folder (that folder is appended to the import path, after everything
  installed, so it can only add names and never shadow an installed module);
- modules the user allows: `--allow-code MODULE` / `allow_code=[...]`, the `SYNTHLOOM_ALLOW_CODE`
  environment variable, and the graph's own `run.allow_code` only when the user says `--trust-graph`.

Everything else, the standard library and other installed packages included, is refused with a message
naming the rule. `CodePolicy.uses` lists what was let in, for `synthloom validate`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean, one_line
from .node import Node, NodeFunction

ENTRY_POINT_GROUP = "synthloom.nodes"
TRUSTED_PACKAGES = ("synthloom_nodes", "synthloom_graphs")
"""Code shipped with synthloom that graphs name in full: the built-in nodes and the workflows' glue."""
ALLOW_CODE_ENV = "SYNTHLOOM_ALLOW_CODE"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def node_type_names() -> list[str]:
    return sorted(_entry_points())


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@dataclass(frozen=True)
class CodeUse:
    """One piece of Python a graph runs, and the rule that let it in."""

    where: str
    target: str
    reason: str


@dataclass
class CodePolicy:
    """Which modules a graph may import: see the module docstring."""

    folders: tuple[Path, ...] = ()
    allowed: tuple[str, ...] = ()
    requested: tuple[str, ...] = ()
    """The graph's own `run.allow_code`, shown in messages; part of `allowed` only with --trust-graph."""
    uses: list[CodeUse] = field(default_factory=list)
    where: str = ""
    """The key being built (`nodes.count`), so `uses` can say who named the code."""

    @classmethod
    def for_graph(cls, folder: Path, allow_code: Iterable[str] = (), requested: Iterable[str] = (),
                  trust_graph: bool = False) -> CodePolicy:
        from_env = [name.strip() for name in os.environ.get(ALLOW_CODE_ENV, "").split(",") if name.strip()]
        requested = tuple(requested)
        allowed = (*allow_code, *from_env, *(requested if trust_graph else ()))
        return cls(folders=(folder.resolve(),), allowed=tuple(allowed), requested=requested)

    @contextlib.contextmanager
    def active(self) -> Iterator[CodePolicy]:
        """Make this the policy for imports in this context, and put the graph's folder on the path."""
        for folder in self.folders:
            if str(folder) not in sys.path:
                sys.path.append(str(folder))
        token = _policy.set(self)
        try:
            yield self
        finally:
            _policy.reset(token)

    def check(self, module_name: str) -> str:
        """The rule that lets `module_name` in; `ConfigError` naming the rule when none does."""
        if module_name.startswith(".") or not all(part.isidentifier() for part in module_name.split(".")):
            raise ConfigError(f"'{module_name}' is not an absolute module name (write package.module:Name; "
                              f"relative imports are not allowed)")
        if any(_within(module_name, package) for package in TRUSTED_PACKAGES):
            return "part of synthloom"
        if module_name in _plugin_modules():
            return "a registered node plugin"
        for name in self.allowed:
            if _within(module_name, name):
                return f"allowed ({name})"
        top = module_name.split(".")[0]
        for folder in self.folders:
            here = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
            if here is None:
                continue
            found = _find_top(top)
            if found is not None and _origin(found) != _origin(here):
                raise ConfigError(f"module '{top}' in the graph's folder has the name of a module imported from "
                                  f"elsewhere ({_origin(found)}); rename {_origin(here)}")
            return f"the graph's folder ({_origin(here)})"
        raise ConfigError(f"graph files may not run '{module_name}' ({self._what(top)}): only node types "
                          f"(`synthloom nodes`), modules in the graph's folder, and modules you allow with "
                          f"--allow-code {top} may run{self._requested_note(module_name)}")

    def _what(self, top: str) -> str:
        if top in sys.stdlib_module_names:
            return "the standard library"
        if _find_top(top) is not None:
            return "an installed module"
        if self.folders:
            return f"no module of that name is installed or in the graph's folder {self.folders[0]}"
        return "no module of that name is installed"

    def _requested_note(self, module_name: str) -> str:
        if any(_within(module_name, name) for name in self.requested):
            return "; the graph's run.allow_code asks for it, which counts only with --trust-graph"
        return ""


_policy: ContextVar[CodePolicy | None] = ContextVar("code_policy", default=None)


def current_policy() -> CodePolicy:
    """The policy of the graph being built; outside one, no folder and only the user's own allow-list."""
    policy = _policy.get()
    if policy is None:
        policy = CodePolicy.for_graph(Path.cwd())
        policy.folders = ()
    return policy


def _find_top(top: str) -> Any:
    """Where a top-level module would be imported from; finding a top-level name imports nothing."""
    module = sys.modules.get(top)
    if module is not None:
        return getattr(module, "__spec__", None)
    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None


def _origin(spec: Any) -> str:
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    return str(locations[0] if locations else getattr(spec, "origin", None))


@lru_cache(maxsize=1)
def _plugin_modules() -> frozenset[str]:
    return frozenset(point.value.partition(":")[0].strip() for point in _entry_points().values())


def import_object(path: str) -> Any:
    """`package.module:attribute` -> the object, if the current `CodePolicy` lets its module run."""
    if not isinstance(path, str):
        raise ConfigError(f"{one_line(path)} should be a string like package.module:Name")
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"'{one_line(path)}' should look like package.module:Name")
    policy = current_policy()
    reason = policy.check(module_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import '{module_name}' ({one_line(error)})") from None
    except Exception as error:  # the module's own top-level code failed: still the user's file to fix
        raise ConfigError(f"importing '{module_name}' failed: {type(error).__name__}: {one_line(error)}") \
            from None
    target = module
    parts = attribute.split(".")
    for depth, part in enumerate(parts):
        try:
            target = getattr(target, part)
        except AttributeError:
            near = [".".join([*parts[:depth], name]) for name in dir(target) if not name.startswith("_")]
            raise ConfigError(f"module '{module_name}' has no '{one_line(attribute)}'"
                              f"{did_you_mean('.'.join(parts[:depth + 1]), near)}") from None
    policy.uses.append(CodeUse(policy.where, path, reason))
    return target


def resolve_node_type(type_name: Any) -> type[Node[Any]]:
    if not isinstance(type_name, str):
        raise ConfigError(f"a node type is a name (see `synthloom nodes`), not {type(type_name).__name__}")
    if ":" in type_name:
        found = import_object(type_name)
    else:
        point = _entry_points().get(type_name)
        if point is None:
            known = ", ".join(node_type_names())
            raise ConfigError(f"unknown node type '{one_line(type_name)}'{did_you_mean(type_name, node_type_names())} "
                              f"(known: {known}; or use package.module:Name)")
        try:
            found = point.load()
        except Exception as error:  # a broken plugin must not crash the CLI with a traceback
            raise ConfigError(f"node type '{type_name}' failed to load from {point.value}: {one_line(error)}") \
                from None
        if not _within(point.value.partition(":")[0], "synthloom_nodes"):
            current_policy().uses.append(CodeUse(current_policy().where, point.value, "a registered node plugin"))
    if isinstance(found, NodeFunction):  # a function made a node with @node
        found = found.node_type
    if not (isinstance(found, type) and issubclass(found, Node)):
        raise ConfigError(f"'{one_line(type_name)}' is not a node type (make it with @node or subclass "
                          f"synthloom.Node)")
    return found

"""Find node types by name, and resolve the code a graph names with what only the plugin API knows.

Node types are found through the `synthloom.nodes` entry points (built-ins and installed plugins alike) or
as `package.module:Name`. Every reference a graph writes to code goes through `import_object`: the code-trust
policy (`synthloom.sandbox.code_policy`) decides which module may run and walks the attribute path; this
module adds the check that needs `Node`: from installed code a graph names only what is exported for graphs.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError, did_you_mean, one_line
from ..sandbox.code_policy import ENTRY_POINT_GROUP, CodeUse, Found, current_policy, find_object, within
from .node import Node, NodeFunction

GRAPH_API = "__graph_api__"
"""A module-level list of the names (`Name` or `Class.member`) an installed module exports for graphs to name
as a python `function`, agent `tools`, pairs `verifier`, `output_schema` or langgraph `graph`."""


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def node_type_names() -> list[str]:
    return sorted(_entry_points())


def import_object(path: str, *, node_type: bool = False) -> Any:
    """`package.module:attribute` -> the object, if the current code policy lets it in (see
    `synthloom.sandbox.code_policy`) and, from installed code, it is exported for graphs. The one way a
    graph's reference to code is resolved; `node_type` when a node's `type` names it, which may name a `Node`
    subclass of installed code besides what it exports."""
    found = find_object(path, function_like=(NodeFunction,))
    if found.installed:
        _check_exported(found, node_type)
    policy = current_policy()
    policy.uses.append(CodeUse(policy.where, path, found.reason))
    return found.target


def _check_exported(found: Found, node_type: bool) -> None:
    """Installed code is nameable by graphs only where it is meant to be: `@node` functions, `Node`
    subclasses as a node `type`, and the names the module lists in `__graph_api__`."""
    path, target = found.path, found.target
    exported = getattr(found.module, GRAPH_API, ())
    if isinstance(target, NodeFunction) or (isinstance(exported, (list, tuple)) and found.attribute in exported):
        return
    if node_type:
        if isinstance(target, type) and issubclass(target, Node):
            return
        raise ConfigError(f"'{path}' is not a node type: from installed packages a node's type names only "
                          f"node types (`synthloom nodes`, @node functions, synthloom.Node subclasses)")
    raise ConfigError(f"'{path}' is not exported for graphs: from installed packages a graph names only "
                      f"@node functions and what a module lists in {GRAPH_API}; put your own code in the "
                      f"graph's folder or allow its module with --allow-code")


def resolve_node_type(type_name: Any) -> type[Node[Any]]:
    if not isinstance(type_name, str):
        raise ConfigError(f"a node type is a name (see `synthloom nodes`), not {type(type_name).__name__}")
    if ":" in type_name:
        found = import_object(type_name, node_type=True)
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
        if not within(point.value.partition(":")[0], "synthloom_nodes"):
            current_policy().uses.append(CodeUse(current_policy().where, point.value, "a registered node plugin"))
    if isinstance(found, NodeFunction):  # a function made a node with @node
        found = found.node_type
    if not (isinstance(found, type) and issubclass(found, Node)):
        raise ConfigError(f"'{one_line(type_name)}' is not a node type (make it with @node or subclass "
                          f"synthloom.Node)")
    return found

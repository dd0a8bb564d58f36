"""Find node types by name: entry points of the group `synthloom.nodes` (built-ins use it too), or an
import path `package.module:Name`."""
from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError
from .node import Node

ENTRY_POINT_GROUP = "synthloom.nodes"


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def node_type_names() -> list[str]:
    return sorted(_entry_points())


def import_object(path: str) -> Any:
    """`package.module:attribute` -> the object; a clear message when it is not there."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"'{path}' should look like package.module:Name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import '{module_name}' ({error}); is it installed or on PYTHONPATH?") \
            from None
    try:
        target = module
        for part in attribute.split("."):
            target = getattr(target, part)
        return target
    except AttributeError:
        raise ConfigError(f"module '{module_name}' has no '{attribute}'") from None


def resolve_node_type(type_name: str) -> type[Node]:
    if ":" in type_name:
        found = import_object(type_name)
    else:
        point = _entry_points().get(type_name)
        if point is None:
            known = ", ".join(node_type_names())
            raise ConfigError(f"unknown node type '{type_name}' (known: {known}; or use package.module:Name)")
        try:
            found = point.load()
        except Exception as error:  # a broken plugin must not crash the CLI with a traceback
            raise ConfigError(f"node type '{type_name}' failed to load from {point.value}: {error}") from None
    if not (isinstance(found, type) and issubclass(found, Node)):
        raise ConfigError(f"'{type_name}' is not a node type (make it with @node or subclass synthloom.Node)")
    return found

"""synthloom: synthetic training data from YAML graphs of LLM roles, streamed record by record.

Only the error types are imported with the package; every other public name is imported on first use
(PEP 562 `__getattr__`), so a plugin's `from synthloom import node`, and `synthloom list`, `validate` and
`show`, do not pay for the engine, the report, the card or the hub.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ModelCallError, RecordError, RunAborted, SynthloomError

if TYPE_CHECKING:  # the lazy names, for type checkers and editors
    from .api import RunResult, arun, load_dataset, read_manifest, read_records, run
    from .engine.runner import Runner, RunOptions
    from .graph.context import RunContext
    from .graph.load import load
    from .graph.node import ANY_KEY, Drop, Node, NodeParams, node
    from .graph.runnable import Graph
    from .inspect.card import build_card
    from .inspect.hub import push
    from .inspect.mixing import mixed_features
    from .inspect.preview import apreview, preview
    from .inspect.report import build_report
    from .models.base import Completion, LLMRequest

_LAZY = {
    "ANY_KEY": "graph.node", "Drop": "graph.node", "Node": "graph.node", "NodeParams": "graph.node",
    "node": "graph.node", "RunResult": "api", "arun": "api", "load": "graph.load", "load_dataset": "api",
    "read_manifest": "api", "read_records": "api", "run": "api", "build_card": "inspect.card",
    "RunContext": "graph.context", "Graph": "graph.runnable", "push": "inspect.hub",
    "mixed_features": "inspect.mixing", "Completion": "models.base", "LLMRequest": "models.base",
    "apreview": "inspect.preview", "preview": "inspect.preview", "build_report": "inspect.report",
    "Runner": "engine.runner", "RunOptions": "engine.runner",
}

__all__ = [
    "ANY_KEY", "Completion", "ConfigError", "Drop", "Graph", "LLMRequest", "ModelCallError", "Node",
    "NodeParams", "RecordError", "RunAborted", "RunContext", "RunOptions", "RunResult", "Runner",
    "SynthloomError", "apreview", "arun", "build_card", "build_report", "load", "load_dataset", "mixed_features",
    "node", "preview", "push", "read_manifest", "read_records", "run",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synthloom' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # asked once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

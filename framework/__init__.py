"""synthloom: synthetic training data from YAML graphs of LLM roles, streamed record by record.

Only the error types are imported with the package; every other public name is imported on first use
(PEP 562 `__getattr__`), so a plugin's `from synthloom import node`, and `synthloom list`, `validate` and
`show`, do not pay for the engine, the report, the card or the hub.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ModelCallError, RecordError, RunAborted, SynthloomError

if TYPE_CHECKING:  # the lazy names, for type checkers and editors
    from .api import RunResult, arun, load, load_dataset, read_manifest, read_records, run
    from .card import build_card
    from .context import RunContext
    from .graph import Graph
    from .hub import push
    from .mixing import mixed_features
    from .models.base import Completion, LLMRequest
    from .node import ANY_KEY, Drop, Node, NodeParams, node
    from .preview import apreview, preview
    from .report import build_report
    from .scheduler import Runner, RunOptions

_LAZY = {
    "ANY_KEY": "node", "Drop": "node", "Node": "node", "NodeParams": "node", "node": "node",
    "RunResult": "api", "arun": "api", "load": "api", "load_dataset": "api", "read_manifest": "api",
    "read_records": "api", "run": "api", "build_card": "card", "RunContext": "context", "Graph": "graph",
    "push": "hub", "mixed_features": "mixing", "Completion": "models.base", "LLMRequest": "models.base",
    "apreview": "preview", "preview": "preview", "build_report": "report", "Runner": "scheduler",
    "RunOptions": "scheduler",
}

__all__ = [
    "ANY_KEY", "Completion", "ConfigError", "Drop", "Graph", "LLMRequest", "ModelCallError", "Node",
    "NodeParams", "RecordError", "RunAborted", "RunContext", "RunOptions", "RunResult", "Runner",
    "SynthloomError", "apreview", "arun", "build_card", "build_report", "load", "load_dataset", "mixed_features",
    "node", "preview", "push", "read_manifest", "read_records", "run",
]
__version__ = "0.1.0"


class _Package(types.ModuleType):
    """Importing the submodule `synthloom.preview` sets the package's attribute `preview` to that module;
    the name belongs to the function, so such a module is not stored and `__getattr__` gives the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synthloom' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # asked once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

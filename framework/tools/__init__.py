"""Tools a graph gives its `llm` and `agent` nodes: Python functions and MCP servers (`tools:` entries),
the per-run toolbox that keeps their limits (`toolbox`) and the constrained-JSON call protocol (`protocol`).
The tool loop that drives a model through them and writes trajectories in TRL's format is the engine's
(`synthloom.engine.tool_loop`): it generates, as the engine does.

Layer: the graph's own (tests/test_layering.py): the graph builds the toolbox and hands it out in the run
context, and the toolbox resolves Python tools through the graph's resolver (graph/registry.py) under the
code policy (sandbox/code_policy.py)."""
from __future__ import annotations

from .definitions import Tool, python_tool
from .toolbox import Toolbox, ToolResult

__all__ = ["Tool", "ToolResult", "Toolbox", "python_tool"]

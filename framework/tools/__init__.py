"""Tools a graph gives its `llm` and `agent` nodes: Python functions and MCP servers (`tools:` entries),
the per-run toolbox that keeps their limits (`toolbox`), and the tool loop that writes trajectories in TRL's
format (`loop`, imported from there: it needs the run context, which holds a toolbox).

Layer: above config, the code policy and models; below the graph and the engine."""
from __future__ import annotations

from .definitions import Tool, python_tool
from .toolbox import Toolbox, ToolResult

__all__ = ["Tool", "ToolResult", "Toolbox", "python_tool"]

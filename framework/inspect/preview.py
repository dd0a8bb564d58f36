"""`synthloom preview`: run a few records through a graph and keep everything about them in memory.

Nothing goes to disk but the response cache (so a run afterwards reuses the answers): no run directory,
no journal, no pool files, and node teardowns (which persist a dedup index) are not called. Each record
comes back as a plain dict: its steps as `trace.py` records them (rendered requests, replies, outputs,
edges with their conditions), and the lines each output would write.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..engine.trace import RecordTrace, record_trace
from ..engine.walk import GraphWalk, NodeFailure
from ..errors import ConfigError, SynthloomError
from ..graph.context import RecordUsage, RunContext, record_usage
from ..graph.load import load
from ..graph.outputs import OutputShaper
from ..graph.runnable import Graph
from ..graph.seeds import BadSeed, read_seeds, row_id
from ..models.cache import ResponseCache
from ..models.clients import ModelPool


def preview(graph: Graph | str | Path, n: int = 3, node: str | None = None,
            use_cache: bool = True, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run `n` seed records (or the seed `rows` given) and return, per record, its steps and what each
    output would write. With `node`, only that node's steps (and a subgraph node's inner steps) are kept."""
    return asyncio.run(apreview(graph, n, node, use_cache, rows))


async def apreview(graph: Graph | str | Path, n: int = 3, node: str | None = None,
                   use_cache: bool = True, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """`preview` inside a running event loop (a notebook cell can `await` it)."""
    if not isinstance(graph, Graph):
        graph = load(graph)
    if node is not None and node not in graph.nodes:
        raise ConfigError(f"--node '{node}' is not a node of {graph.name} (nodes: {', '.join(graph.nodes)})")
    models = ModelPool(graph.config.models, ResponseCache() if use_cache else None)
    ctx = RunContext(models=models, base_dir=graph.base_dir, graph_name=graph.name,
                     read_folders=graph.code.read_folders, tools=graph.tools)
    previewer = _Previewer(graph, ctx, node)
    try:
        await models.prepare(graph.models_used())
        for each in graph.nodes.values():
            await each.setup(ctx)
        records: list[dict[str, Any]] = []
        for item in rows if rows is not None else read_seeds(graph.config.seed, graph.base_dir, n):
            if isinstance(item, BadSeed):
                records.append({"id": None, "outcome": "failed", "node": "seed",
                                "error": f"{item.where}: {item.message}", "steps": [], "outputs": {}})
                continue
            records.append(await asyncio.create_task(previewer.record(item)))
        return records
    finally:
        ctx.close_pools()
        await models.close()
        await ctx.tools.close()


class _Previewer:
    def __init__(self, graph: Graph, ctx: RunContext, node: str | None):
        self.graph, self.node = graph, node
        self.walker = GraphWalk(graph, ctx)
        self.shapers = [OutputShaper(output) for output in graph.config.outputs]

    async def record(self, seed: dict[str, Any]) -> dict[str, Any]:
        """One record, in a task of its own so its trace and usage context variables stay its own."""
        record_id = row_id(seed, self.graph.config.seed.id_field)
        state: dict[str, Any] = {**seed, "id": record_id}
        trace, usage = RecordTrace(record_id), RecordUsage()
        record_trace.set(trace)
        record_usage.set(usage)
        result: dict[str, Any] = {"id": record_id, "outcome": "written"}
        try:
            outcome = await self.walker.walk(state)
        except NodeFailure as failure:
            result.update(outcome="failed", node=failure.node,
                          error=f"{type(failure.error).__name__}: {failure.error}")
            outcome = None
        if isinstance(outcome, tuple):
            result.update(outcome="dropped", node=outcome[0], reason=outcome[1].reason)
        outputs: dict[str, list[dict[str, Any]]] = {}
        if result["outcome"] == "written":
            metadata = {"id": record_id, "graph": self.graph.name, "config_hash": self.graph.loaded.hash,
                        **usage.as_dict()}
            try:
                outputs = {shaper.name: shaper.shape(state, metadata) for shaper in self.shapers}
            except SynthloomError as error:
                result.update(outcome="failed", node="outputs", error=f"{type(error).__name__}: {error}")
        result["steps"] = [step for step in trace.lines() if self._shown(step["node"])]
        result["outputs"] = outputs
        result["usage"] = usage.as_dict()
        return result

    def _shown(self, step_node: str) -> bool:
        return self.node is None or step_node == self.node or step_node.startswith(f"{self.node}.")

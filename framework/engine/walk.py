"""One record's walk through a graph: a node runs once its forward ancestors are done, edges whose
conditions hold lead on, a Drop ends the walk. The scheduler walks every record with it, and a `subgraph`
node walks its child graph with it, so a nested graph runs exactly as a top-level one does."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from types import MappingProxyType
from typing import Any

from ..errors import RecordError
from ..graph.context import RunContext, current_step
from ..graph.node import Drop
from ..graph.runnable import Edge, Graph
from .trace import RecordTrace, record_trace


class NodeFailure(Exception):
    def __init__(self, node: str, error: BaseException):
        super().__init__(str(error))
        self.node, self.error = node, error


class GraphWalk:
    """Walks records through one graph. Stats and failures go by `node.name`, which a subgraph node sets
    to `<subgraph>.<child>`, so a nested node is told apart from a parent node of the same name."""

    def __init__(self, graph: Graph, ctx: RunContext):
        self.graph = graph
        self.ctx = ctx

    async def walk(self, state: dict[str, Any]) -> tuple[str, Drop] | None:
        """Move the record through the graph. Nodes whose forward ancestors are all done run; several
        ready at once (parallel branches) run together and see the same state."""
        traversals: Counter[int] = Counter()
        pending = list(self.graph.starts)
        ancestors = self.graph.forward_ancestors
        while pending:
            active = set(pending)
            ready = [name for name in pending if not (ancestors[name] & active)]
            pending = [name for name in pending if name not in ready]
            if len(ready) == 1:
                results = [await self._step(ready[0], state)]
            else:
                try:
                    async with asyncio.TaskGroup() as group:
                        tasks = [group.create_task(self._step(name, state)) for name in ready]
                except* NodeFailure as failures:
                    raise failures.exceptions[0] from None
                results = [task.result() for task in tasks]
            for name, result in zip(ready, results, strict=True):
                if isinstance(result, Drop):
                    return self.graph.nodes[name].name, result
                if result:
                    state.update(result)
            for name in ready:
                for target in self._next_nodes(self.graph.edges_from[name], state, traversals, name):
                    if target not in pending:
                        pending.append(target)
        return None

    def _next_nodes(self, edges: list[Edge], state: dict[str, Any], traversals: Counter[int],
                    node: str) -> list[str]:
        trace = record_trace.get()
        step = trace.last_step(self.graph.nodes[node].name) if trace else None
        targets: list[str] = []
        for edge in edges:
            if edge.max_visits is not None and traversals[edge.index] >= edge.max_visits:
                if step:
                    step.add_edge(edge, None, False, f"max_visits {edge.max_visits} reached")
                continue
            value = None
            if edge.when is not None:
                try:
                    value = edge.when.holds(state)
                except RecordError as error:
                    raise NodeFailure(self.graph.nodes[node].name, error) from None
                if step:
                    step.add_edge(edge, value, value, f"when is {value}")
                if not value:
                    continue
            elif step:
                step.add_edge(edge, None, True, "unconditional")
            traversals[edge.index] += 1
            targets.append(edge.target)
        return targets

    def _step(self, name: str, state: dict[str, Any]) -> Coroutine[Any, Any, dict[str, Any] | Drop | None]:
        """The node's run, traced when the record is. Untraced, the node's coroutine is handed back as it
        is: every frame between the walk and the HTTP call is resumed again at each of the call's awaits."""
        trace = record_trace.get()
        if trace is None:
            return self._run_node(name, state)
        return self._traced_step(trace, name, state)

    async def _traced_step(self, trace: RecordTrace, name: str, state: dict[str, Any]) -> dict[str, Any] | Drop | None:
        step = trace.begin(self.graph.nodes[name], str(self.graph.config.nodes[name]["type"]), state)
        token = current_step.set(step)
        try:
            result = await self._run_node(name, state)
        except NodeFailure as failure:
            step.fail(failure.error)
            raise
        finally:
            current_step.reset(token)
        step.finish(result)
        return result

    async def _run_node(self, name: str, state: dict[str, Any]) -> dict[str, Any] | Drop | None:
        node = self.graph.nodes[name]
        stats = self.ctx.stats_for(node.name)
        started = time.perf_counter()
        try:
            result = await node(MappingProxyType(state), self.ctx)
        except asyncio.CancelledError:
            raise
        except NodeFailure:  # a nested walk failed: keep the name of the innermost node
            stats.failures += 1
            raise
        except Exception as error:
            stats.failures += 1
            raise NodeFailure(node.name, error) from error
        stats.steps += 1
        stats.seconds.add(time.perf_counter() - started)
        if result is None or isinstance(result, (dict, Drop)):
            if isinstance(result, Drop):
                stats.drops += 1
            return result
        stats.failures += 1
        raise NodeFailure(node.name, RecordError(f"node returned {type(result).__name__}; a node returns a "
                                                 f"dict of state updates, None or Drop (or set output: key)"))

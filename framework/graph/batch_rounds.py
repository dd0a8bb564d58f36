"""How many batch rounds a graph needs (for `validate`; in graph/, since it walks the graph, while
models/batch/ only runs the calls): a record waits for a whole batch at every batch-model node it
passes, so its wall time is about rounds x the provider's batch turnaround (minutes to 24 hours).

The count is the longest walk a record can take, counting the rounds of each visit of a node that calls
a batch model, each loop taken as often as its `max_visits` allows (conditions are assumed to take the
longest way). A visit is one round, or `max_turns` / `max_steps` of a conversation or an agent (one call
per turn or step); parse retries are not counted (a reply that does not parse costs one more round).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .node import Node
    from .runnable import Graph

MAX_STATES = 200_000
"""Walk states explored before giving up (loops multiply them: a product of max_visits + 1)."""


def batch_rounds(graph: Graph, batched: Callable[[str], bool] | None = None) -> int | None:
    """The most rounds a record needs; None when no node calls a batch model (by `batched(model)`, default:
    the graph's `batch:` models) or the walk is too large to explore."""
    if batched is None:
        models = graph.config.models
        def batched(name: str) -> bool:
            return name in models and models[name].batch is not None
    weight = {name: _calls_per_visit(node) if any(batched(model) for model in node.models()) else 0
              for name, node in graph.nodes.items()}
    if not any(weight.values()):
        return None
    edges = [edge for edges in graph.edges_from.values() for edge in edges]
    bounded = [edge.index for edge in edges if edge.max_visits]
    slot = {index: position for position, index in enumerate(bounded)}
    limits = {edge.index: edge.max_visits for edge in edges if edge.max_visits}
    explored = 0

    @cache
    def longest(node: str, visits: tuple[int, ...]) -> int:
        """Rounds from entering `node`, with `visits` of each bounded edge taken so far."""
        nonlocal explored
        explored += 1
        if explored > MAX_STATES:
            raise OverflowError
        best = 0
        for edge in graph.edges_from[node]:
            if edge.index in slot:
                taken = visits[slot[edge.index]]
                if taken >= limits[edge.index]:
                    continue
                after = visits[:slot[edge.index]] + (taken + 1,) + visits[slot[edge.index] + 1:]
            else:
                after = visits
            best = max(best, longest(edge.target, after))
        return weight[node] + best

    try:
        return max(longest(start, (0,) * len(bounded)) for start in graph.starts)
    except (OverflowError, RecursionError):
        return None


def _calls_per_visit(node: Node[Any]) -> int:
    """The model calls one visit makes one after another: a conversation's turns, an agent's steps, else 1."""
    for name in ("max_turns", "max_steps"):
        value = getattr(node.params, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1

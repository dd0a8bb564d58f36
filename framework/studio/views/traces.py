"""A record's trace: its steps, with the run's graph drawn beside them, each node linked to its steps."""
from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from markupsafe import Markup

from ...store.journal import TRACES
from ..pages import NotFound, graph_mtime, page, run_graph, run_of
from ..records import index_of, up_to_date

MAX_TRACE_STEPS = 500


async def trace_page(request: web.Request) -> web.Response:
    run = run_of(request)
    if not run.traced:
        raise NotFound(f"run {run.key} has no {TRACES}: run it with --trace to see each record's steps")
    record_id = request.match_info["id"]
    index = index_of(run.path / TRACES)
    await up_to_date(index, wait=True)
    entries = (await asyncio.to_thread(index.by_key, record_id))[:MAX_TRACE_STEPS]
    steps = [orjson.loads(line) for _, line in await asyncio.to_thread(lambda: list(index.read(entries)))]
    nodes = list(dict.fromkeys(str(step.get("node")) for step in steps))
    anchors = {node: f"#node-{number}" for number, node in enumerate(nodes)}
    firsts = {node: next(i for i, step in enumerate(steps) if str(step.get("node")) == node) for node in nodes}
    placed = [(step, anchors[node][1:] if firsts[node] == number else f"step-{number}")
              for number, step in enumerate(steps) for node in [str(step.get("node"))]]
    manifest = run.manifest()
    svg = await asyncio.to_thread(_graph_svg, str(manifest.get("graph_file") or ""), graph_mtime(manifest), anchors)
    return page(request, "trace.html", title=f"{run.key} / trace {record_id}", run=run, record_id=record_id,
                steps=placed, svg=Markup(svg) if svg else None, truncated=len(entries) >= MAX_TRACE_STEPS)


def _graph_svg(graph_file: str, mtime: float, anchors: dict[str, str]) -> str | None:
    """The run's graph drawn, each node linking to its steps; None when the graph file no longer loads."""
    from ...inspect.diagram import render_svg
    graph = run_graph(graph_file, mtime)
    return render_svg(graph, anchors) if graph is not None else None



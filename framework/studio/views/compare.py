"""Two runs side by side."""
from __future__ import annotations

import asyncio

from aiohttp import web

from ..pages import graph_mtime, run_graph, run_of
from ..security import INLINE_STYLE_POLICY

COMPARE_PARSED_LINES = 200_000  # lines of an output parsed at most (every k-th past that), as the card does


async def compare_page(request: web.Request) -> web.Response:
    """Two runs side by side: the page `synthloom report --compare` writes, made in memory."""
    first, second = run_of(request, request.query.get("a", "")), run_of(request, request.query.get("b", ""))

    def render() -> str:
        from ...inspect.report import render as render_report
        from ...inspect.report_data import read_run
        runs = [read_run(first.path, COMPARE_PARSED_LINES), read_run(second.path, COMPARE_PARSED_LINES)]
        manifest = runs[0].manifest
        return str(render_report(runs, run_graph(str(manifest.get("graph_file") or ""), graph_mtime(manifest))))

    response = web.Response(text=await asyncio.to_thread(render), content_type="text/html")
    response.headers["Content-Security-Policy"] = INLINE_STYLE_POLICY
    return response

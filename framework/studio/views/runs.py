"""The runs page (live counts through /api/runs) and one run's page."""
from __future__ import annotations

import asyncio

from aiohttp import web

from ..pages import ROOTS, page, run_of, runs_of
from ..runs import summary


async def runs_page(request: web.Request) -> web.Response:
    runs = await asyncio.to_thread(lambda: [summary(run) for run in runs_of(request).values()])
    return page(request, "runs.html", title="runs", runs=runs, roots=[str(root) for root in request.app[ROOTS]])


async def runs_json(request: web.Request) -> web.Response:
    runs = await asyncio.to_thread(lambda: [summary(run) for run in runs_of(request).values()])
    return web.json_response(runs)


async def run_page(request: web.Request) -> web.Response:
    run = run_of(request)
    info = await asyncio.to_thread(summary, run)
    files = [(name, (run.path / f"{name}.jsonl").exists()) for name in run.files()]
    others = [key for key in runs_of(request) if key != run.key]
    return page(request, "run.html", title=run.key, run=info, files=files, others=others)

"""`synthloom studio`: the aiohttp app over run directories and its routes (the pages are in `views/`).

Every view has a stable URL (a run by its key, a file by its name, a record by its line number, a trace by
the record's id, a query in the query string), so a page can be bookmarked, shared or reloaded. Handlers
only gather what a page shows; reading files happens in worker threads (`records`, `index`), and every
string from a run is printed by an autoescaping template.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import SynthloomError
from .pages import GUARD, HERE, ROOTS, NotFound, page
from .security import Guard
from .views import compare, iterate, records, runs, traces


def make_app(roots: list[Path], host: str = "127.0.0.1", port: int = 8766) -> web.Application:
    """The studio over the runs in (or at) `roots`; `host`/`port` are where it is reached (for the Host check)."""
    guard = Guard(host, port)
    app = web.Application(middlewares=[guard.middleware, errors_as_pages], client_max_size=4 * 1024 * 1024)
    app[GUARD] = guard
    app[ROOTS] = roots
    app.add_routes([
        web.get("/", runs.runs_page),
        web.get("/api/runs", runs.runs_json),
        web.get("/runs/{run}", runs.run_page),
        web.get("/runs/{run}/files/{file}", records.records_page),
        web.get("/runs/{run}/files/{file}/{line:\\d+}", records.record_page),
        web.post("/runs/{run}/files/{file}/{line:\\d+}/review", records.review_post),
        web.get("/runs/{run}/traces/{id}", traces.trace_page),
        web.get("/compare", compare.compare_page),
        web.get("/runs/{run}/iterate", iterate.iterate_page),
        web.post("/runs/{run}/iterate", iterate.iterate_post),
        web.static("/static", HERE / "static", follow_symlinks=False),
    ])
    return app


@web.middleware
async def errors_as_pages(request: web.Request, handler: Any) -> web.StreamResponse:
    """A user's mistake (an unknown run, a bad reviews.jsonl line) is a one-line page, never a traceback."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except NotFound as error:
        return page(request, "message.html", status=404, title="not found", message=str(error))
    except SynthloomError as error:
        return page(request, "message.html", status=400, title="cannot show this", message=str(error))

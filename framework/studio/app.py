"""`synthloom studio`: the aiohttp app over run directories, its routes and its pages.

Every view has a stable URL (a run by its key, a file by its name, a record by its line number, a trace by
the record's id, a query in the query string), so a page can be bookmarked, shared or reloaded. Handlers
only gather what a page shows; reading files happens in worker threads (`records`, `index`), and every
string from a run is printed by an autoescaping template.
"""
from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..errors import SynthloomError
from ..journal import TRACES
from ..store.reviews import VERDICTS, Review, append_review, latest_reviews
from .index import Condition, parse_condition
from .records import PAGE, Query, edit_from_form, index_of, read_page, shape, up_to_date
from .runs import Run, find_runs, summary
from .security import INLINE_STYLE_POLICY, TOKEN_FIELD, Guard

HERE = Path(__file__).parent
MAX_TRACE_STEPS = 500
GUARD = web.AppKey("guard", Guard)
ROOTS = web.AppKey("roots", list)


@lru_cache(maxsize=1)
def templates() -> Environment:
    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["q"] = lambda value: quote(str(value), safe="")
    environment.filters["pretty"] = lambda value: json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return environment


def make_app(roots: list[Path], host: str = "127.0.0.1", port: int = 8766) -> web.Application:
    """The studio over the runs in (or at) `roots`; `host`/`port` are where it is reached (for the Host check)."""
    guard = Guard(host, port)
    app = web.Application(middlewares=[guard.middleware, errors_as_pages], client_max_size=4 * 1024 * 1024)
    app[GUARD] = guard
    app[ROOTS] = roots
    app.add_routes([
        web.get("/", runs_page),
        web.get("/api/runs", runs_json),
        web.get("/runs/{run}", run_page),
        web.get("/runs/{run}/files/{file}", records_page),
        web.get("/runs/{run}/files/{file}/{line:\\d+}", record_page),
        web.post("/runs/{run}/files/{file}/{line:\\d+}/review", review_post),
        web.get("/runs/{run}/traces/{id}", trace_page),
        web.get("/compare", compare_page),
        web.get("/runs/{run}/iterate", iterate_page),
        web.post("/runs/{run}/iterate", iterate_post),
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


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    guard = request.app[GUARD]
    text = templates().get_template(template).render(token=guard.token, token_field=TOKEN_FIELD, **values)
    return web.Response(text=text, content_type="text/html", status=status)


def runs_of(request: web.Request) -> dict[str, Run]:
    return find_runs(request.app[ROOTS])


def run_of(request: web.Request, key: str | None = None) -> Run:
    found = runs_of(request).get(key or request.match_info["run"])
    if found is None:
        raise NotFound("no such run among the folders this studio serves")
    return found


class NotFound(SynthloomError):
    pass


def file_of(request: web.Request, run: Run) -> str:
    name = request.match_info["file"]
    if name not in run.files():
        raise NotFound(f"run {run.key} has no file '{name}'; it has {', '.join(run.files()) or 'none'}")
    return name


# -- runs ---------------------------------------------------------------------------------------------

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


# -- records ------------------------------------------------------------------------------------------

def query_of(request: web.Request) -> tuple[Query, list[str]]:
    """The query in the URL, and a line for each part of it that could not be used."""
    problems: list[str] = []
    conditions: list[Condition] = []
    for text in request.query.getall("where", []):
        if not text.strip():
            continue
        condition = parse_condition(text)
        if condition is None:
            problems.append(f"'{text}' is not a filter; write it as field op value, e.g. score>=6")
        else:
            conditions.append(condition)
    sort = request.query.get("sort", "").strip()
    review = request.query.get("review", "")
    if review not in ("", "accepted", "rejected", "unreviewed"):
        problems.append(f"'{review}' is not a review state")
        review = ""
    try:
        start = max(0, int(request.query.get("start", "0")))
    except ValueError:
        start = 0
    return Query(conditions, sort.lstrip("-") or None, sort.startswith("-"), request.query.get("q", "").strip(),
                 review, start), problems


async def records_page(request: web.Request) -> web.Response:
    run = run_of(request)
    name = file_of(request, run)
    query, problems = query_of(request)
    try:
        result = await read_page(run.path, name, query)
    except KeyError as unknown:
        problems.append(f"no field {unknown} in {name}; pick one the list offers")
        query = Query(text=query.text, start=0)
        result = await read_page(run.path, name, query)
    fields = await asyncio.to_thread(index_of(run.path / f"{name}.jsonl").fields)
    base = {key: value for key, value in request.query.items() if key != "start"}
    keep = [(key, value) for key, value in request.query.items() if key != "start"]
    return page(request, "records.html", title=f"{run.key} / {name}", run=run, file=name, page=result,
                query=query, problems=problems, fields=fields, page_size=PAGE, verdicts=VERDICTS,
                wheres=request.query.getall("where", []), base=base, here=str(request.rel_url),
                next_url=_with_start(keep, result.next_start), first_url=_with_start(keep, 0),
                previous_url=_with_start(keep, max(0, query.start - PAGE)) if query.start and not query.text
                else None)


def _with_start(pairs: list[tuple[str, str]], start: int | None) -> str | None:
    if start is None:
        return None
    return "?" + urlencode([*pairs, *([("start", str(start))] if start else [])])


async def _one_line(run: Run, name: str, number: int) -> dict[str, Any]:
    index = index_of(run.path / f"{name}.jsonl")
    lines = await asyncio.to_thread(index.head, number - 1, 1)
    if not lines or lines[0][0] != number:
        raise NotFound(f"{name} of run {run.key} has no line {number}")
    return shape(number, lines[0][1], latest_reviews(run.path, name), name)


async def record_page(request: web.Request) -> web.Response:
    run = run_of(request)
    name = file_of(request, run)
    record = await _one_line(run, name, int(request.match_info["line"]))
    return page(request, "record.html", title=f"{run.key} / {name} / {record['key']}", run=run, file=name,
                row=record, verdicts=VERDICTS, here=str(request.rel_url))


async def review_post(request: web.Request) -> web.StreamResponse:
    run = run_of(request)
    name = file_of(request, run)
    if name in ("failed", "dropped"):
        raise NotFound("failed and dropped records are not reviewed; only an output's records are")
    number = int(request.match_info["line"])
    record = await _one_line(run, name, number)
    form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
    verdict = form.get("verdict", "")
    if verdict not in VERDICTS:
        raise NotFound(f"a review is one of {', '.join(VERDICTS)}")
    edit = edit_from_form(record["record"], form) if verdict == "accept" else {}
    await asyncio.to_thread(append_review, run.path, Review(name, record["key"], verdict, form.get("note", ""), edit))
    back = form.get("back", "")
    if not back.startswith(f"/runs/{quote(run.key, safe='')}/") or "//" in back or "\\" in back:
        back = f"/runs/{quote(run.key, safe='')}/files/{quote(name, safe='')}/{number}"
    raise web.HTTPSeeOther(f"{back}#r{number}")


# -- traces -------------------------------------------------------------------------------------------

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
    svg = await asyncio.to_thread(_graph_svg, str(manifest.get("graph_file") or ""), _mtime(manifest), anchors)
    return page(request, "trace.html", title=f"{run.key} / trace {record_id}", run=run, record_id=record_id,
                steps=placed, svg=Markup(svg) if svg else None, truncated=len(entries) >= MAX_TRACE_STEPS)


def _mtime(manifest: dict[str, Any]) -> float:
    graph_file = manifest.get("graph_file")
    try:
        return Path(graph_file).stat().st_mtime if isinstance(graph_file, str) else 0.0
    except OSError:
        return 0.0


def _graph_svg(graph_file: str, mtime: float, anchors: dict[str, str]) -> str | None:
    """The run's graph drawn, each node linking to its steps; None when the graph file no longer loads."""
    from ..diagram import render_svg
    graph = _run_graph(graph_file, mtime)
    return render_svg(graph, anchors) if graph is not None else None


@lru_cache(maxsize=16)
def _run_graph(graph_file: str, mtime: float) -> Any:
    from ..card import run_graph
    return run_graph({"graph_file": graph_file})


# -- compare ------------------------------------------------------------------------------------------

async def compare_page(request: web.Request) -> web.Response:
    """Two runs side by side: the page `synthloom report --compare` writes, made in memory."""
    first, second = run_of(request, request.query.get("a", "")), run_of(request, request.query.get("b", ""))

    def render() -> str:
        from ..report import render as render_report
        from ..report_data import read_run
        runs = [read_run(first.path), read_run(second.path)]
        manifest = runs[0].manifest
        return str(render_report(runs, _run_graph(str(manifest.get("graph_file") or ""), _mtime(manifest))))

    response = web.Response(text=await asyncio.to_thread(render), content_type="text/html")
    response.headers["Content-Security-Policy"] = INLINE_STYLE_POLICY
    return response


# -- iterate ------------------------------------------------------------------------------------------

async def iterate_page(request: web.Request) -> web.Response:
    run = run_of(request)
    return await _iterate(request, run, request.query.get("node", ""), None, request.query.get("ids", ""), "")


async def iterate_post(request: web.Request) -> web.Response:
    run = run_of(request)
    form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
    return await _iterate(request, run, form.get("node", ""), form.get("spec", ""), form.get("ids", ""),
                          form.get("action", "preview"))


async def _iterate(request: web.Request, run: Run, node: str, spec: str | None, ids_text: str,
                   action: str) -> web.Response:
    """The iterate page: a node's YAML to edit, records to preview, and (after a POST) both previews or the
    path of the saved copy."""
    from . import iterate
    manifest = run.manifest()
    path = iterate.graph_file(manifest)
    raw = await asyncio.to_thread(iterate.raw_graph, path)
    nodes = list(raw["nodes"])
    node = node if node in nodes else nodes[0]
    ids = [item.strip() for item in ids_text.split(",") if item.strip()]
    if not ids and run.outputs():
        head = await asyncio.to_thread(index_of(run.path / f"{run.outputs()[0]}.jsonl").head, 0, 3)
        ids = [shape(number, line, {}, "")["key"] for number, line in head]
    text = spec if spec is not None else iterate.node_yaml(raw, node)
    results, saved, problem = None, None, None
    try:
        if action == "preview":
            results = await asyncio.to_thread(iterate.side_by_side, manifest, node, text, ids)
        elif action == "save":
            saved = str(await asyncio.to_thread(iterate.save_as, manifest, node, text))
    except SynthloomError as error:
        problem = str(error)
    return page(request, "iterate.html", title=f"{run.key} / iterate {node}", run=run, graph_path=str(path),
                nodes=nodes, node=node, spec=text, ids=", ".join(ids), results=results, saved=saved,
                problem=problem)

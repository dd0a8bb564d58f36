"""A file's records (paged, filtered, sorted, searched), one record, and its review."""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from ...store.reviews import VERDICTS, Review, append_review, latest_reviews
from ..index import Condition, parse_condition
from ..pages import NotFound, file_of, page, run_of
from ..records import PAGE, Query, edit_from_form, index_of, read_page, shape
from ..runs import Run


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

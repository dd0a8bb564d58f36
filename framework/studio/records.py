"""One page of a run's file: the query (filters, sort, text search, review state) over its index, and each
record shaped for its template (a conversation, a DPO pair, a failed or dropped record, anything else).

Text search reads the candidate lines in order and stops when the page is full or its budget is spent,
returning where to go on from: it never reads a whole file to show one page.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..store.reviews import Review, latest_reviews, record_key
from .index import Condition, LineIndex

PAGE = 25
SEARCH_SECONDS = 2.0      # a text search returns what it found in this long, with a link to go on
SEARCH_CHUNK = 500        # candidate lines read at a time


@dataclass
class Query:
    conditions: list[Condition] = field(default_factory=list)
    sort: str | None = None
    descending: bool = False
    text: str = ""
    review: str = ""      # "", "accepted", "rejected", "unreviewed"
    start: int = 0        # position in the ordered matches (a search: where to go on from)

    @property
    def plain(self) -> bool:
        """No filter, sort or review state: file order, which needs no finished index."""
        return not self.conditions and not self.sort and not self.review


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int | None            # matches (None while a search or the index is still going)
    next_start: int | None       # where the next page starts, when there is one
    indexing: bool = False       # the index is still being built: counts are not final


_INDEXES: dict[Path, LineIndex] = {}
_BUILDS: dict[Path, asyncio.Task[int]] = {}


def index_of(path: Path) -> LineIndex:
    key = path.resolve()
    if key not in _INDEXES:
        _INDEXES[key] = LineIndex(path)
    return _INDEXES[key]


async def up_to_date(index: LineIndex, wait: bool) -> bool:
    """Start (or join) indexing the lines added since the last look; with `wait`, until it is done.
    Returns True when the index is complete."""
    key = index.source.resolve()
    build = _BUILDS.get(key)
    if build is None or build.done():
        if build is None or not await asyncio.to_thread(index.is_current):
            build = _BUILDS[key] = asyncio.get_running_loop().create_task(asyncio.to_thread(index.update))
        else:
            return True
    if wait:
        await asyncio.shield(build)
        return True
    return build.done()


async def read_page(run_path: Path, output: str, query: Query) -> Page:
    path = run_path / f"{output}.jsonl"
    index = index_of(path)
    reviews = latest_reviews(run_path, output)
    if query.plain and not query.text:
        complete = await up_to_date(index, wait=False)
        lines = await asyncio.to_thread(index.head, query.start, PAGE + 1)
        total = await asyncio.to_thread(index.indexed_lines) if complete else None
        rows = [shape(number, line, reviews, output) for number, line in lines[:PAGE]]
        return Page(rows, total, query.start + PAGE if len(lines) > PAGE else None, indexing=not complete)
    await up_to_date(index, wait=True)
    clause = await asyncio.to_thread(index.select, query.conditions, query.sort, query.descending,
                                     _review_keys(reviews, output, query.review))
    if not query.text:
        entries = await asyncio.to_thread(index.entries, clause, query.start, PAGE + 1)
        lines = await asyncio.to_thread(lambda: list(index.read(entries[:PAGE])))
        total = await asyncio.to_thread(index.count, clause)
        rows = [shape(number, line, reviews, output) for number, line in lines]
        return Page(rows, total, query.start + PAGE if len(entries) > PAGE else None)
    return await asyncio.to_thread(_search, index, clause, query, reviews, output)


def _review_keys(reviews: dict[tuple[str, str], Review], output: str, state: str) -> tuple[str, set[str]] | None:
    if not state:
        return None
    accepted = {key for (_, key), review in reviews.items() if review.verdict == "accept"}
    rejected = {key for (_, key), review in reviews.items() if review.verdict == "reject"}
    if state == "accepted":
        return "in", accepted
    if state == "rejected":
        return "in", rejected
    return "not in", accepted | rejected


def _search(index: LineIndex, clause: tuple[str, list[Any]], query: Query,
            reviews: dict[tuple[str, str], Review], output: str) -> Page:
    needle = query.text.casefold()
    found: list[dict[str, Any]] = []
    position, deadline = query.start, time.monotonic() + SEARCH_SECONDS
    while len(found) <= PAGE:
        entries = index.entries(clause, position, SEARCH_CHUNK)
        if not entries:
            return Page(found[:PAGE], None, None)
        for offset, (number, line) in enumerate(index.read(entries)):
            if needle in searchable(line):
                found.append(shape(number, line, reviews, output))
                if len(found) > PAGE:
                    return Page(found[:PAGE], None, position + offset)
        position += len(entries)
        if time.monotonic() > deadline:
            return Page(found, None, position)
    return Page(found[:PAGE], None, position)


def searchable(line: bytes) -> str:
    """Every string in a line (keys and values), casefolded, so a quote or a non-ASCII letter matches as
    typed rather than as JSON escapes it."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line.decode("utf-8", "replace").casefold()
    parts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict):
            parts.extend(str(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            parts.append(str(item))
    return "\n".join(parts).casefold()


# -- a record, shaped for its template --------------------------------------------------------------

def shape(number: int, line: bytes, reviews: dict[tuple[str, str], Review], output: str) -> dict[str, Any]:
    """What a template needs of one line: its kind (chat, dpo, failed, dropped, other), its parts, its key
    and its last review."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {"n": number, "kind": "unreadable", "key": f"line-{number}", "text": line.decode("utf-8", "replace"),
                "review": None, "metadata": {}, "record": None}
    if not isinstance(record, dict):
        record = {"value": record}
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    key = record_key(record, number)
    shaped: dict[str, Any] = {"n": number, "key": key, "metadata": metadata, "record": record,
                              "review": reviews.get((output, key))}
    if output == "failed":
        shaped.update(kind="failed", node=record.get("node"), error=f"{record.get('error_type', '')}: "
                      f"{record.get('message', '')}", attempts=record.get("attempts"),
                      state=_pretty(record.get("seed")))
    elif output == "dropped":
        shaped.update(kind="dropped", node=record.get("node"), reason=record.get("reason"),
                      detail=_pretty(record.get("detail")), state=_pretty(record.get("state")))
    elif isinstance(record.get("messages"), list):
        shaped.update(kind="chat", messages=_messages(record["messages"]))
    elif "chosen" in record:
        shaped.update(kind="dpo", prompt=_messages(record.get("prompt")), chosen=_messages(record.get("chosen")),
                      rejected=_messages(record.get("rejected")))
    else:
        shaped.update(kind="other", text=_pretty({k: v for k, v in record.items() if k != "metadata"}))
    return shaped


def _messages(value: Any) -> list[dict[str, str]]:
    """A message list (or a bare string, shown as one user turn) as role/content pairs of text."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return []
    return [{"role": str(item.get("role", "")), "content": _text(item.get("content"))}
            if isinstance(item, dict) else {"role": "", "content": _text(item)} for item in value]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str) if value is not None else ""


def edit_from_form(record: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The parts an edit replaces: each assistant turn of `messages`, `chosen` or `rejected` whose text the
    form changed (`turn:<part>:<index>`); other turns and every other field stay as the run wrote them."""
    edit: dict[str, Any] = {}
    for part in ("messages", "chosen", "rejected"):
        turns = record.get(part)
        if not isinstance(turns, list):
            continue
        changed = [dict(turn) if isinstance(turn, dict) else turn for turn in turns]
        for position, turn in enumerate(changed):
            name = f"turn:{part}:{position}"
            if isinstance(turn, dict) and turn.get("role") == "assistant" and name in form:
                text = form[name].replace("\r\n", "\n")
                if text != turn.get("content"):
                    turn["content"] = text
        if changed != turns:
            edit[part] = changed
    return edit

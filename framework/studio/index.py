"""An on-the-side index of one JSONL file, so no view reads a whole output to show one page.

One SQLite row per line: its byte offset and length, the record's key (what reviews and traces name it by)
and its scalar metadata flattened to a JSON object (`score`, `tags.lang`, `node`, `reason` ...), which
filters and sorts read through `json_extract`; the first filter or sort on a field adds an expression index
for it. The file lives in the cache folder, outside the run directory, which stays as the run wrote it.

The index grows incrementally: a run still going appends lines, and the next look indexes only the new
whole lines. A file that shrank, was replaced, or whose last indexed line changed (a `--resume` keeps the
lines of journaled records and rewrites the file) is indexed again from the start. Building runs in a
thread; a plain page does not wait for it: it reads forward from the nearest indexed line.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..models.cache import default_cache_dir, use_wal
from ..store.reviews import record_key

BATCH = 5000           # lines a transaction
MAX_FIELDS = 64        # fields followed per file (a record with more keeps its first ones)
LONGEST_VALUE = 200    # longer strings are text, not metadata
SORTABLE = 8           # numeric fields indexed as the file is (others get theirs on their first filter)
FIELD_NAME = re.compile(r"[A-Za-z0-9_.\- ]{1,100}")
OPERATORS = {">=": ">=", "<=": "<=", ">": ">", "<": "<", "=": "=", "!=": "!="}
BIG_KEYS = frozenset({"messages", "prompt", "chosen", "rejected", "state", "seed", "calls", "reads", "output",
                      "traceback", "edges"})


@dataclass(frozen=True)
class Condition:
    """`field op value` of a filter; the value is compared as a number when it reads as one."""

    field: str
    op: str
    value: str

    @property
    def operand(self) -> float | str:
        try:
            number = float(self.value)
        except ValueError:
            return self.value
        return number if math.isfinite(number) else self.value


CONDITION = re.compile(r"\s*([A-Za-z0-9_.\- ]+?)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")


def parse_condition(text: str) -> Condition | None:
    """`score>=6`, `node = keep_answer`; None when it is not of that form."""
    found = CONDITION.fullmatch(text)
    if not found or not FIELD_NAME.fullmatch(found.group(1)):
        return None
    return Condition(found.group(1), found.group(2), found.group(3))


def facets(row: Any) -> dict[str, Any]:
    """The scalar fields a line is filtered and sorted by: its metadata when it has one, else its own top
    level (failed, dropped, trace lines), nested objects one level deep as dotted names."""
    if not isinstance(row, dict):
        return {}
    source = row["metadata"] if isinstance(row.get("metadata"), dict) else row
    found: dict[str, Any] = {}
    for key, value in source.items():
        if key in BIG_KEYS and source is row:
            continue
        if isinstance(value, dict):
            for inner, item in value.items():
                if _scalar(item):
                    found[f"{key}.{inner}"] = item
        elif _scalar(value):
            found[str(key)] = value
        if len(found) >= MAX_FIELDS:
            break
    return found


def _scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= LONGEST_VALUE
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (int, bool)) or value is None


def index_path(source: Path) -> Path:
    """Where the index of `source` lives: the cache folder, named by the file's resolved path."""
    resolved = str(source.resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:20]
    return default_cache_dir() / "studio" / f"{digest}-{re.sub(r'[^A-Za-z0-9_.-]', '_', source.name)}.sqlite"


SCHEMA = """
create table if not exists lines (n integer primary key, offset integer not null, length integer not null,
                                  key text, meta text not null);
create index if not exists lines_key on lines(key);
create table if not exists state (id integer primary key check (id = 1), inode integer, indexed integer,
                                  last_offset integer, last_digest text);
create table if not exists fields (name text primary key, numbers integer, texts integer);
"""


class LineIndex:
    """The index of one JSONL file. Thread-safe: builds hold a lock; readers open their own connection."""

    def __init__(self, source: Path, location: Path | None = None):
        self.source = source
        self.location = location or index_path(source)
        self._build_lock = threading.Lock()
        self.location.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own (callers run in worker threads), closed after use."""
        db = sqlite3.connect(self.location, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            use_wal(db)  # threads opening a new index at once (the first switch does not wait)
            db.execute("pragma synchronous=normal")
            yield db
        finally:
            db.close()

    # -- building ---------------------------------------------------------------------------------

    def indexed_lines(self) -> int:
        with self._connect() as db:
            row = db.execute("select max(n) from lines").fetchone()
        return int(row[0] or 0)

    def is_current(self) -> bool:
        """True when every whole line of the file is indexed (cheap: a stat and one query)."""
        try:
            info = os.stat(self.source)
        except FileNotFoundError:
            return self.indexed_lines() == 0
        with self._connect() as db:
            state = db.execute("select inode, indexed from state").fetchone()
        return state is not None and state[0] == info.st_ino and state[1] == info.st_size

    def update(self) -> int:
        """Index the lines added since the last look (or all of them, when the file changed under us);
        return the number of lines indexed. One build at a time; a second caller waits for the first."""
        with self._build_lock, self._connect() as db:
            try:
                handle = self.source.open("rb")
            except FileNotFoundError:
                db.execute("delete from lines")
                db.execute("delete from state")
                return 0
            with handle:
                start, number = self._resume_point(db, handle)
                handle.seek(start)
                self._index_from(db, handle, start, number)
            known = self.fields()
            for name in [name for name, kind in known.items() if kind == "number"][:SORTABLE]:
                self._expression(db, name, known)  # scores sort and filter at once, not after an index build
            row = db.execute("select max(n) from lines").fetchone()
            return int(row[0] or 0)

    def _resume_point(self, db: sqlite3.Connection, handle: Any) -> tuple[int, int]:
        """(byte offset, lines before it) to index from: where the last build stopped, if the file still
        holds what it indexed there; else the start, after clearing the old index."""
        info = os.fstat(handle.fileno())
        state = db.execute("select inode, indexed, last_offset, last_digest from state").fetchone()
        if state is not None and state[0] == info.st_ino and state[1] <= info.st_size:
            inode, indexed, last_offset, last_digest = state
            if last_digest is None and indexed == 0:  # it was empty when last looked at
                return 0, 0
            handle.seek(last_offset)
            if _digest(handle.read(indexed - last_offset)) == last_digest:
                count = db.execute("select max(n) from lines").fetchone()[0] or 0
                return int(indexed), int(count)
        db.execute("begin")
        db.execute("delete from lines")
        db.execute("delete from fields")
        db.execute("delete from state")
        db.execute("commit")
        return 0, 0

    def _index_from(self, db: sqlite3.Connection, handle: Any, offset: int, number: int) -> None:
        rows: list[tuple[int, int, int, str, str]] = []
        kinds: dict[str, list[int]] = {name: [numbers, texts] for name, numbers, texts in
                                       db.execute("select name, numbers, texts from fields")}
        last: tuple[int, bytes] | None = None
        for line in handle:
            if not line.endswith(b"\n"):
                break  # a line still being written: the next look takes it whole
            number += 1
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            found = facets(row) if row is not None else {"unreadable": True}
            for name, value in found.items():
                kind = kinds.get(name)
                if kind is None:
                    if len(kinds) >= MAX_FIELDS:
                        continue
                    kind = kinds[name] = [0, 0]
                kind[0 if isinstance(value, (int, float)) and not isinstance(value, bool) else 1] += 1
            key = record_key(row, number) if isinstance(row, dict) else f"line-{number}"
            rows.append((number, offset, len(line), key, orjson.dumps(found).decode()))
            last = (offset, line)
            offset += len(line)
            if len(rows) >= BATCH:
                self._commit(db, rows, kinds, offset, last)
                rows = []
        if rows:
            self._commit(db, rows, kinds, offset, last)
        elif db.execute("select 1 from state").fetchone() is None:  # an empty file: indexed, to its 0 bytes
            self._commit(db, [], kinds, offset, None)

    def _commit(self, db: sqlite3.Connection, rows: list[tuple[int, int, int, str, str]],
                kinds: dict[str, list[int]], indexed: int, last: tuple[int, bytes] | None) -> None:
        inode = os.stat(self.source).st_ino
        db.execute("begin")
        db.executemany("insert or replace into lines values (?, ?, ?, ?, ?)", rows)
        db.executemany("insert or replace into fields values (?, ?, ?)",
                       [(name, kind[0], kind[1]) for name, kind in kinds.items()])
        if last is not None:
            db.execute("insert or replace into state values (1, ?, ?, ?, ?)",
                       (inode, indexed, last[0], _digest(last[1])))
        else:
            db.execute("insert or replace into state values (1, ?, 0, 0, null)", (inode,))
        db.execute("commit")

    # -- reading ----------------------------------------------------------------------------------

    def fields(self) -> dict[str, str]:
        """Field name -> "number" or "text" (a field holding any text is text)."""
        with self._connect() as db:
            return {name: "text" if texts else "number"
                    for name, numbers, texts in db.execute("select name, numbers, texts from fields order by name")}

    def _expression(self, db: sqlite3.Connection, name: str, known: dict[str, str]) -> str:
        """`json_extract(meta, '$."name"')` for a known field, with an index on it made the first time."""
        if name not in known or not FIELD_NAME.fullmatch(name):
            raise KeyError(name)
        expression = "json_extract(meta, '$.\"" + name.replace("'", "''") + "\"')"
        index_name = "f_" + hashlib.sha256(name.encode()).hexdigest()[:16]
        db.execute(f"create index if not exists {index_name} on lines({expression})")
        return expression

    def select(self, conditions: list[Condition], sort: str | None = None, descending: bool = False,
               keys: tuple[str, set[str]] | None = None) -> tuple[str, list[Any]]:
        """The SQL (where and order) for a query; unknown fields raise KeyError naming them."""
        known = self.fields()
        parts, values = [], []
        with self._connect() as db:
            for condition in conditions:
                expression = self._expression(db, condition.field, known)
                parts.append(f"{expression} {OPERATORS[condition.op]} ?")
                values.append(condition.operand)
            order = "n"
            if sort:  # records without the field are left out of a ranking by it; ties keep the index's order
                expression = self._expression(db, sort, known)
                direction = "desc" if descending else "asc"
                parts.append(f"{expression} is not null")
                order = f"{expression} {direction}, n {direction}"
        if keys is not None:
            mode, chosen = keys
            marks = ",".join("?" * len(chosen))
            parts.append(f"key {'in' if mode == 'in' else 'not in'} ({marks})")
            values.extend(sorted(chosen))
        where = " and ".join(parts) or "1"
        return f"where {where} order by {order}", values

    def count(self, clause: tuple[str, list[Any]]) -> int:
        where = clause[0].split(" order by ")[0]
        with self._connect() as db:
            return int(db.execute(f"select count(*) from lines {where}", clause[1]).fetchone()[0])

    def entries(self, clause: tuple[str, list[Any]], start: int, limit: int) -> list[tuple[int, int, int, str]]:
        """(line number, offset, length, key) of the `limit` matching lines from position `start`."""
        with self._connect() as db:
            return [(int(n), int(offset), int(length), str(key)) for n, offset, length, key in db.execute(
                f"select n, offset, length, key from lines {clause[0]} limit ? offset ?",
                [*clause[1], limit, start])]

    def by_key(self, key: str) -> list[tuple[int, int, int, str]]:
        with self._connect() as db:
            return [(int(n), int(offset), int(length), str(found)) for n, offset, length, found in db.execute(
                "select n, offset, length, key from lines where key = ? order by n", (key,))]

    def nearest(self, number: int) -> tuple[int, int] | None:
        """(line number, offset) of the last indexed line at or before `number`."""
        with self._connect() as db:
            row = db.execute("select n, offset from lines where n <= ? order by n desc limit 1", (number,)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def head(self, start: int, limit: int) -> list[tuple[int, bytes]]:
        """Lines `start+1 .. start+limit` in file order, read forward from the nearest indexed line, so the
        first pages of a file show before its index is built."""
        near = self.nearest(start + 1)
        number, offset = (near[0] - 1, near[1]) if near else (0, 0)
        found: list[tuple[int, bytes]] = []
        try:
            with self.source.open("rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break
                    number += 1
                    if number > start:
                        found.append((number, line))
                        if len(found) >= limit:
                            break
        except FileNotFoundError:
            pass
        return found

    def read(self, entries: list[tuple[int, int, int, str]]) -> Iterator[tuple[int, bytes]]:
        """The lines of `entries`, by seeking to each (in the order given)."""
        with self.source.open("rb") as handle:
            for number, offset, length, _ in entries:
                handle.seek(offset)
                yield number, handle.read(length)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()

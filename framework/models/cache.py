"""A response cache keyed by the content that determines the answer: backend, model, messages or prompt,
parameters (seed included) and sample index. Throughput settings are not in the key, so tuning speed
never costs a re-run. Stored in SQLite under $SYNTHLOOM_CACHE_DIR (default ~/.cache/synthloom)."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from .base import Completion, LLMRequest

COMMIT_EVERY_S = 0.5
WAL_ATTEMPTS = 50


def default_cache_dir() -> Path:
    return Path(os.environ.get("SYNTHLOOM_CACHE_DIR") or Path.home() / ".cache" / "synthloom")


def cache_key(identity: dict[str, Any], request: LLMRequest) -> str:
    payload = json.dumps({"model": identity, **request.cache_payload()}, sort_keys=True, default=str,
                         separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def use_wal(db: sqlite3.Connection) -> None:
    """Write-ahead logging, so readers never wait for a writer. Switching a new file to it takes a lock
    that SQLite does not wait for (no busy timeout): a connection (another process's, or another thread's
    in the studio) that asks at the very moment another switches it is told "database is locked", and
    tries again. A file already in WAL answers at once."""
    for attempt in range(WAL_ATTEMPTS):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


class ResponseCache:
    def __init__(self, directory: Path | None = None):
        directory = directory or default_cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "responses.sqlite"
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        use_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT, "
                         "prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT, created REAL, "
                         "tool_calls TEXT)")
        self._add_tool_calls_column()
        self._pending: list[tuple[Any, ...]] = []
        self._last_commit = time.monotonic()
        self.hits = self.misses = 0

    def _add_tool_calls_column(self) -> None:
        """A cache made before native tool calls lacks the column. Several processes (Ray shards, two runs)
        open one cache at once, so the look and the change are one write transaction: the second process
        waits for the first and then finds the column there."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # the table's definition as the file holds it now: PRAGMA table_info, or a query naming the column,
            # reads this connection's copy of the schema, which may be from before the other process's change
            (definition,) = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                             "AND name = 'responses'").fetchone()
            if "tool_calls" not in definition:
                self._db.execute("ALTER TABLE responses ADD COLUMN tool_calls TEXT")
        finally:
            self._db.execute("COMMIT")

    def get(self, key: str) -> Completion | None:
        row = self._db.execute("SELECT text, prompt_tokens, completion_tokens, finish_reason, tool_calls FROM "
                               "responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            for pending in self._pending:
                if pending[0] == key:
                    row = (*pending[1:5], pending[6])
                    break
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Completion(text=row[0], prompt_tokens=row[1], completion_tokens=row[2],
                          finish_reason=row[3], cached=True, attempts=0,
                          tool_calls=json.loads(row[4]) if row[4] else None)

    def put(self, key: str, completion: Completion) -> None:
        self._pending.append((key, completion.text, completion.prompt_tokens, completion.completion_tokens,
                              completion.finish_reason, time.time(),
                              json.dumps(completion.tool_calls) if completion.tool_calls else None))
        if time.monotonic() - self._last_commit > COMMIT_EVERY_S or len(self._pending) >= 256:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO responses (key, text, prompt_tokens, completion_tokens, "
                                 "finish_reason, created, tool_calls) VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending)
            self._db.execute("COMMIT")
            self._pending.clear()
        self._last_commit = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._db.close()

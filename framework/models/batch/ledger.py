"""`<run>/batches.sqlite`: every batch this run handed to a provider, written down before it counts as
submitted, so a killed run pays for no call twice.

A submission is written in two steps, each committed with fsync before the next network step: its input
file id and the `custom_id` of every line (after the upload, before the batch is created), then the batch
id (once created). A run killed between the two finds the batch by its input file (`BatchAPI.
find_by_input_file`) instead of creating another. `--resume` asks, for each call, which submission last
carried its `custom_id` (content-derived: see `client.py`), and waits for that batch's answer instead of
sending the call again. SQLite keeps the map on disk, so memory stays flat however many calls a run makes.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import OutputWriteError

BATCHES = "batches.sqlite"
SQLITE_JOURNAL = BATCHES + "-journal"


@dataclass(frozen=True)
class Submission:
    """One batch as the ledger knows it. `batch_id` is None while the batch was not (known to be) created."""

    id: int
    model: str
    input_file: str
    endpoint: str
    completion_window: str
    batch_id: str | None
    status: str
    lines: int
    created: float


class SubmissionLedger:
    def __init__(self, directory: Path):
        self.path = directory / BATCHES
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on the disk before the next request
            self._db.execute("CREATE TABLE IF NOT EXISTS submissions (id INTEGER PRIMARY KEY, model TEXT NOT "
                             "NULL, input_file TEXT NOT NULL, endpoint TEXT NOT NULL, completion_window TEXT NOT "
                             "NULL, batch_id TEXT, status TEXT NOT NULL, lines INTEGER NOT NULL, created REAL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS lines (custom_id TEXT NOT NULL, submission INTEGER NOT "
                             "NULL, PRIMARY KEY (custom_id, submission)) WITHOUT ROWID")
        except sqlite3.Error as error:
            raise OutputWriteError(f"cannot keep the batch ledger {self.path}: {error}") from None

    def file_uploaded(self, model: str, input_file: str, endpoint: str, completion_window: str,
                      custom_ids: list[str]) -> int:
        """Step one: the lines of a batch about to be created. Returns the submission's number."""
        try:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO submissions (model, input_file, endpoint, completion_window, batch_id, status, "
                "lines, created) VALUES (?, ?, ?, ?, NULL, 'uploaded', ?, ?)",
                (model, input_file, endpoint, completion_window, len(custom_ids), time.time()))
            number = int(cursor.lastrowid or 0)
            self._db.executemany("INSERT OR IGNORE INTO lines VALUES (?, ?)",
                                 [(custom_id, number) for custom_id in custom_ids])
            self._db.execute("COMMIT")
            return number
        except sqlite3.Error as error:
            self._rollback()
            raise OutputWriteError(f"cannot write the batch ledger {self.path}: {error}") from None

    def batch_created(self, submission: int, batch_id: str) -> None:
        """Step two: the provider's id of the batch; from here on the submission is done."""
        self._update("UPDATE submissions SET batch_id = ?, status = 'pending' WHERE id = ?", (batch_id, submission))

    def settled(self, submission: int, status: str) -> None:
        """completed, failed, expired, cancelled: what the provider said at the end (for --resume and the
        manifest; the answers themselves stay at the provider, and in the response cache)."""
        self._update("UPDATE submissions SET status = ? WHERE id = ?", (status, submission))

    def last_carrying(self, model: str, custom_id: str) -> Submission | None:
        """The latest submission of `model` that carried `custom_id`, if any did."""
        row = self._db.execute(
            "SELECT s.id, s.model, s.input_file, s.endpoint, s.completion_window, s.batch_id, s.status, s.lines, "
            "s.created FROM lines l JOIN submissions s ON s.id = l.submission WHERE l.custom_id = ? AND "
            "s.model = ? ORDER BY s.id DESC LIMIT 1", (custom_id, model)).fetchone()
        return Submission(*row) if row else None

    def rounds_unanswered(self, model: str, custom_id: str) -> int:
        """How many of `model`'s batches carried `custom_id` and ended without answering it (expired,
        failed, or completed without its line), over every part of the run: the line's rounds spent, so a
        resumed run does not start them again. A cancelled batch spends none: a person cancelled it
        (`--cancel-batches`, or at the provider), the provider did not fail the line."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM lines l JOIN submissions s ON s.id = l.submission WHERE l.custom_id = ? AND "
            "s.model = ? AND s.status IN ('expired', 'failed', 'completed')", (custom_id, model)).fetchone()
        return int(row[0])

    def unsettled(self, model: str) -> list[Submission]:
        rows = self._db.execute(
            "SELECT id, model, input_file, endpoint, completion_window, batch_id, status, lines, created FROM "
            "submissions WHERE model = ? AND status IN ('uploaded', 'pending') ORDER BY id", (model,)).fetchall()
        return [Submission(*row) for row in rows]

    def summary(self, model: str) -> dict[str, Any]:
        """`model`'s batches over every part of the run: how many were submitted, by status, and their
        lines (all, fewest and most per batch)."""
        created = "model = ? AND batch_id IS NOT NULL"
        by_status = self._db.execute(f"SELECT status, COUNT(*) FROM submissions WHERE {created} GROUP BY status",
                                     (model,)).fetchall()
        count, lines, fewest, most = self._db.execute(
            f"SELECT COUNT(*), SUM(lines), MIN(lines), MAX(lines) FROM submissions WHERE {created}",
            (model,)).fetchone()
        return {"submitted": int(count), "by_status": {str(status): int(n) for status, n in by_status},
                "lines": int(lines or 0), "lines_per_batch": {"min": fewest, "max": most}}

    def close(self) -> None:
        self._db.close()

    def _update(self, sql: str, values: tuple[object, ...]) -> None:
        try:
            self._db.execute(sql, values)
        except sqlite3.Error as error:
            raise OutputWriteError(f"cannot write the batch ledger {self.path}: {error}") from None

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

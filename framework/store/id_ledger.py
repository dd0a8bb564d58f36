"""Record ids on disk, so a run's memory stays flat however many seed rows it reads.

Two questions are asked of every seed row: which id does it get (identical rows are numbered `<hash>`,
`<hash>-2`, ... in seed order) and is that id already settled by an earlier part of the run. Held in Python
sets, the answers grow by ~200 bytes a record (200 MB at a million); here they live in a SQLite file beside
the journal (the journal stays the source of truth: the file is rebuilt from it by every part of the run and
deleted when the part ends), with a bounded page cache.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import OutputWriteError

LEDGER = ".synthloom-ids.sqlite"
CACHE_KIB = 2048  # the page cache, all the memory the ledger holds; pages past it come back from the OS file cache
COMMIT_EVERY = 2000


class IdLedger:
    def __init__(self, directory: Path):
        self.path = directory / LEDGER
        self._pending = 0
        try:
            self.path.unlink(missing_ok=True)  # what a killed part left: the journal rebuilds it
            self._db = sqlite3.connect(self.path, isolation_level="DEFERRED", check_same_thread=False)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}",
                           "temp_store=FILE", "locking_mode=EXCLUSIVE"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, repeats INTEGER NOT NULL) WITHOUT ROWID")
            self._db.execute("CREATE TABLE done (id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT) "
                             "WITHOUT ROWID")
            self._db.execute("CREATE TABLE retried (id TEXT PRIMARY KEY, times INTEGER NOT NULL) WITHOUT ROWID")
        except sqlite3.Error as error:
            raise OutputWriteError(f"cannot keep record ids in {self.path}: {error}") from None
        self.done_count = 0
        self._any_retried = False  # most runs retry nothing: the per-record look then costs no query

    # -- settled ids, from the journal ------------------------------------------------------------------

    def load_done(self, entries: Iterable[tuple[str, str, str | None]], retrying: str) -> None:
        """`(id, status, reason)` in journal order: the last word on an id wins. Entries of status
        `retrying` are also counted per id (`times_retried`)."""
        def settled() -> Iterator[tuple[str, str, str | None]]:
            for entry in entries:
                if entry[1] == retrying:
                    self.count_retry([entry[0]])
                yield entry
        self._guard(lambda: self._db.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?)", settled()))
        self._commit()

    def count_retry(self, record_ids: list[str]) -> None:
        """These failed ids are taken up again by this part (the journal says `retrying` for each)."""
        self._any_retried = self._any_retried or bool(record_ids)
        self._guard(lambda: self._db.executemany(
            "INSERT INTO retried VALUES (?, 1) ON CONFLICT(id) DO UPDATE SET times = times + 1",
            [(record_id,) for record_id in record_ids]))

    def times_retried(self, record_id: str) -> int:
        """How many parts of the run took this id up again after it had failed (`--resume` retrying it)."""
        if not self._any_retried:
            return 0
        row = self._db.execute("SELECT times FROM retried WHERE id = ?", (record_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def keep_only(self, statuses: set[str]) -> None:
        """Forget settled ids whose status this part runs again (failed ones, when retrying)."""
        marks = ",".join("?" * len(statuses))
        self._guard(lambda: self._db.execute(f"DELETE FROM done WHERE status NOT IN ({marks})", tuple(statuses)))
        self._commit()
        row = self._db.execute("SELECT count(*) FROM done").fetchone()
        self.done_count = int(row[0])

    def status(self, record_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM done WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else str(row[0])

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and self.done_count > 0 and self.status(record_id) is not None

    def ids_with_status(self, status: str, batch: int = 10_000) -> Iterator[list[str]]:
        cursor = self._db.execute("SELECT id FROM done WHERE status = ?", (status,))
        while rows := cursor.fetchmany(batch):
            yield [str(row[0]) for row in rows]

    def reasons_with_status(self, status: str, batch: int = 10_000) -> Iterator[list[tuple[str, str | None]]]:
        cursor = self._db.execute("SELECT id, reason FROM done WHERE status = ?", (status,))
        while rows := cursor.fetchmany(batch):
            yield [(str(row[0]), None if row[1] is None else str(row[1])) for row in rows]

    def change_status(self, old: str, new: str) -> None:
        self._guard(lambda: self._db.execute("UPDATE done SET status = ? WHERE status = ?", (new, old)))
        self._commit()

    def tally(self) -> list[tuple[str, str | None, int]]:
        """`(status, reason, records)` over the settled ids: the earlier parts' counts and reasons."""
        rows = self._db.execute("SELECT status, reason, count(*) FROM done GROUP BY status, reason")
        return [(str(status), reason, int(count)) for status, reason, count in rows]

    # -- numbering identical seed rows ----------------------------------------------------------------

    def number(self, base: str) -> str:
        """The id of the next seed row whose own id (or hash) is `base`: `base` the first time, then
        `base-2`, `base-3`, ...; an id some seed row already has is never handed out twice."""
        row = self._db.execute("SELECT repeats FROM ids WHERE id = ?", (base,)).fetchone()
        if row is None:
            self._insert(base, 1)
            return base
        repeat = int(row[0])
        while True:
            repeat += 1
            candidate = f"{base}-{repeat}"
            if self._db.execute("SELECT 1 FROM ids WHERE id = ?", (candidate,)).fetchone() is None:
                break
        self._guard(lambda: self._db.execute("UPDATE ids SET repeats = ? WHERE id = ?", (repeat, base)))
        self._insert(candidate, 1)
        return candidate

    def _insert(self, record_id: str, repeats: int) -> None:
        self._guard(lambda: self._db.execute("INSERT INTO ids VALUES (?, ?)", (record_id, repeats)))
        self._pending += 1
        if self._pending >= COMMIT_EVERY:
            self._commit()

    def _commit(self) -> None:
        self._pending = 0
        self._guard(self._db.commit)

    def _guard(self, action: Callable[[], object]) -> None:
        try:
            action()
        except sqlite3.Error as error:
            raise OutputWriteError(f"cannot keep record ids in {self.path}: {error}") from None

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self.path.unlink(missing_ok=True)

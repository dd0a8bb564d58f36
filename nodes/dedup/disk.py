"""The entries of the `exact` and `minhash` indexes on disk (SQLite), so a kept text costs some bytes of
file and no memory beyond a fixed page cache: a run keeping ten million texts dedups in the memory of one
keeping a thousand.

The working file is the process's own (a temporary folder named with its pid, removed when the index
goes, or by the next index made on the machine if a kill -9 left it). `save` copies it
into the `index:` folder atomically; `load` copies a saved one in, after checking that it holds only the
tables an index of the same kind and settings writes (an `index:` folder may come with a stranger's
graph, and a view or trigger there could run SQL of theirs).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import weakref
from pathlib import Path
from typing import Any

from .base import Origin

CACHE_KIB = 4096
"""SQLite's page cache per index: the only memory an index holds, whatever its size."""
COMMIT_EVERY = 2000
WORK_PREFIX = "synthloom-dedup-"


def _sweep_orphans() -> None:
    """Remove the working folders of processes that are gone (a kill -9 skips the clean-up at exit)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        pid = folder.name[len(WORK_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class IndexFile:
    """One SQLite file of an index: its tables (`schema`: CREATE statements; a saved file may hold just
    these), its settings, and the runs its entries came from (numbered, so an entry stores a small int)."""

    def __init__(self, kind: str, settings: dict[str, Any], schema: list[str]):
        self.kind, self.settings, self.schema = kind, settings, schema
        _sweep_orphans()
        self._folder = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-{kind}-")
        self.path = Path(self._folder) / f"{kind}.sqlite"
        self.db = self._connect()
        self._create()
        self._run_ids: dict[str, int] = {}
        self._run_paths: dict[int, str] = {}
        weakref.finalize(self, shutil.rmtree, self._folder, True)

    def _connect(self) -> sqlite3.Connection:
        # one thread at a time (the shared index's lock), but not always the same one
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}", "temp_store=FILE"):
            db.execute(f"PRAGMA {pragma}")
        return db

    def _create(self) -> None:
        self.db.execute("CREATE TABLE settings (kind TEXT, json TEXT)")
        self.db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, path TEXT UNIQUE)")
        for statement in self.schema:
            self.db.execute(statement)
        self.db.execute("INSERT INTO settings VALUES (?, ?)", (self.kind, json.dumps(self.settings)))
        self.db.execute("BEGIN")
        self._uncommitted = 0

    def added(self) -> None:
        """Count a write; commit every COMMIT_EVERY. Writes stay in one open transaction between commits:
        the file is scratch (a kill -9 loses it, and the kept log rebuilds it), and a commit per entry
        cost more than the look-up itself."""
        self._uncommitted += 1
        if self._uncommitted >= COMMIT_EVERY:
            self.commit()

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        self._uncommitted = 0

    def run_id(self, run: str) -> int:
        found = self._run_ids.get(run)
        if found is None:
            self.db.execute("INSERT OR IGNORE INTO runs (path) VALUES (?)", (run,))
            found = self._run_ids[run] = int(self.db.execute("SELECT id FROM runs WHERE path = ?",
                                                             (run,)).fetchone()[0])
            self._run_paths[found] = run
        return found

    def origin(self, run_id: int, record_id: str) -> Origin:
        path = self._run_paths.get(run_id)
        if path is None:
            path = self._run_paths[run_id] = str(self.db.execute("SELECT path FROM runs WHERE id = ?",
                                                                 (run_id,)).fetchone()[0])
        return Origin(path, record_id)

    def save(self, path: Path) -> None:
        """A consistent copy at `path`, replaced atomically (a crash never leaves half an index)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.unlink(missing_ok=True)
        self.commit()
        target = sqlite3.connect(temporary)
        try:
            self.db.backup(target)
        finally:
            target.close()
        os.replace(temporary, path)

    def load(self, path: Path) -> None:
        """Take over the saved file's entries (before any entry is added here)."""
        self._check(path)
        self.db.close()
        shutil.copyfile(path, self.path)
        self.db = self._connect()
        self.db.execute("BEGIN")
        self._uncommitted = 0
        self._run_ids.clear()
        self._run_paths.clear()

    def _check(self, path: Path) -> None:
        try:
            saved = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise ValueError(f"{path.name} is not readable: {error}") from None
        try:
            if self._layout(saved) != self._layout(self.db):
                raise ValueError(f"{path.name} holds tables a synthloom {self.kind} index does not write")
            rows = saved.execute("SELECT kind, json FROM settings").fetchall()
        except sqlite3.DatabaseError as error:
            raise ValueError(f"{path.name} is not a synthloom index: {error}") from None
        finally:
            saved.close()
        if len(rows) != 1 or rows[0][0] != self.kind:
            raise ValueError(f"{path.name} is not a {self.kind} index")
        stored = json.loads(rows[0][1])
        if stored != self.settings:
            differing = ", ".join(f"{key} {stored.get(key)!r}" for key in self.settings
                                  if stored.get(key) != self.settings[key])
            raise ValueError(f"it was built with {differing}; use the same settings or a new index folder")

    @staticmethod
    def _layout(db: sqlite3.Connection) -> list[tuple[str, str, list[tuple[Any, ...]]]]:
        """Every object (tables and indexes only, so no view or trigger) with its columns, hidden and
        generated ones included (`table_xinfo`: a generated column `randomblob(10**6)` grows the file at
        every insert), and every index's columns."""
        objects = db.execute("SELECT type, name FROM sqlite_master ORDER BY type, name").fetchall()
        pragmas = {"table": "table_xinfo", "index": "index_xinfo"}
        return [(kind, name, db.execute(f"PRAGMA {pragmas[kind]}({json.dumps(name)})").fetchall()
                 if kind in pragmas else []) for kind, name in objects]


class DiskIndex:
    """What `exact` and `minhash` share around their `IndexFile`: saving it, loading a saved one (or a
    folder of the earlier format, through `_load_legacy`), and travelling to a Ray actor as "reopen from
    this `index:` folder" (shared storage), never as a pickled file."""

    FILE: str
    file: IndexFile
    loaded_from: Path | None = None

    def save(self, folder: Path) -> None:
        self.file.save(folder / self.FILE)

    def load(self, folder: Path) -> None:
        self.loaded_from = folder
        if (folder / self.FILE).exists():
            self.file.load(folder / self.FILE)
        else:
            self._load_legacy(folder)

    def _load_legacy(self, folder: Path) -> None:
        """Entries from the folder's file of the earlier format, if it has one."""

    def _arguments(self) -> tuple[Any, ...]:
        """What the constructor takes, to make the same index elsewhere."""
        return ()

    def __reduce__(self) -> tuple[Any, ...]:
        return _reopened, (type(self), self._arguments(), self.loaded_from)


def _reopened(kind: type[DiskIndex], arguments: tuple[Any, ...], folder: Path | None) -> DiskIndex:
    index = kind(*arguments)
    if folder is not None:
        index.load(folder)
    return index

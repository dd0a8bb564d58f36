"""The output directory as a resumable ledger.

A record's lines are appended to the output files first and its id to journal.jsonl last. So after a
crash, kill -9, Ctrl-C or a full disk, every id in the journal is fully written, and any line whose id is
not in the journal (or that was cut mid-write) belongs to a record that will run again: `resume` removes
those lines before the run goes on. Every seed record ends in exactly one place: an output, dropped.jsonl
or failed.jsonl.

The journal's last word on an id wins: a record that failed and, retried by `--resume`, was written, is
written. Each journal line also carries the drop reason or failure type, so the manifest's totals come from
the journal and survive any number of resumed parts.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, OutputWriteError
from .pool import POOL_DIR

JOURNAL = "journal.jsonl"
FAILED = "failed.jsonl"
DROPPED = "dropped.jsonl"
MANIFEST = "manifest.json"
TRACES = "traces.jsonl"
CARD = "README.md"
LOCK = ".synthloom.lock"

WRITTEN = "written"
DROPPED_STATUS = "dropped"
FAILED_STATUS = "failed"


class JsonlWriter:
    """Append-only JSON lines, flushed per record so a killed process loses nothing it reported done.

    A write that fails (a full disk, a read-only directory) raises `OutputWriteError` and breaks the writer:
    nothing more is written through it, so half a buffer can never land after a later, luckier flush.
    """

    def __init__(self, path: Path):
        self.path = path
        self._handle: IO[str] | None = None
        self._broken = False

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        self.write_text(text)

    def write_text(self, text: str) -> None:
        if self._broken:
            raise OutputWriteError(f"cannot write to {self.path}: an earlier write failed")
        try:
            if self._handle is None:
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(text)
            self._handle.flush()
        except OSError as error:
            self._broken = True
            raise OutputWriteError(f"cannot write to {self.path}: {error.strerror or error}") from None

    def sync(self) -> None:
        """Flush and fsync, so a power loss after this keeps what was written."""
        if self._handle is not None and not self._broken:
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError:
                self._broken = True

    def close(self) -> None:
        if self._handle is not None:
            try:
                if not self._broken:
                    self.sync()
                self._handle.close()
            except OSError:
                pass  # the error was reported when the write failed; closing must not hide the outcome
            self._handle = None


class Journal:
    """journal.jsonl: a header per part of the run, then `{"id", "status", "reason"}` per settled record."""

    def __init__(self, directory: Path, config_hash: str):
        self.directory = directory
        self.config_hash = config_hash
        self.done: set[str] = set()
        """Ids this part will not run again."""
        self.previous: Counter[str] = Counter()
        """Statuses of the done ids, from earlier parts."""
        self.previous_reasons: dict[str, Counter[str]] = {DROPPED_STATUS: Counter(), FAILED_STATUS: Counter()}
        self._writer = JsonlWriter(directory / JOURNAL)

    @property
    def path(self) -> Path:
        return self.directory / JOURNAL

    def holds_a_run(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def start(self, *, resume: bool, overwrite: bool, data_files: list[str], retry_failed: bool = True,
              started: float | None = None) -> dict[str, int]:
        """Open the ledger for this part; returns the lines kept per data file (for counting as we write)."""
        exists = self.holds_a_run()
        if overwrite:
            for name in [*data_files, JOURNAL, MANIFEST, CARD]:
                (self.directory / name).unlink(missing_ok=True)
            shutil.rmtree(self.directory / POOL_DIR, ignore_errors=True)
            exists = False
        if exists and not resume:
            raise ConfigError(f"{self.directory} already holds a run; add --resume to finish it, "
                              f"--overwrite to start again, or choose another output directory")
        kept = dict.fromkeys(data_files, 0)
        if exists:
            statuses = self._load(retry_failed)
            for name in data_files:
                kept[name] = _keep_lines_of(self.directory / name, _status_of_file(name), statuses)
        else:
            strays = [name for name in [*data_files, MANIFEST, CARD, POOL_DIR] if (self.directory / name).exists()]
            if strays:
                raise ConfigError(f"{self.directory} holds {', '.join(strays)} but no run journal; move them "
                                  f"away, choose another output directory, or add --overwrite to delete them")
        self._writer.write([{"config_hash": self.config_hash, "part_started": started}])
        return kept

    def _entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: its record was not done
                if isinstance(entry, dict):
                    yield entry

    def _final_statuses(self) -> dict[str, dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        for entry in self._entries():
            if "id" not in entry:
                if entry.get("config_hash", self.config_hash) != self.config_hash:
                    raise ConfigError(f"the graph changed since the run in {self.directory} started (its "
                                      f"prompts, nodes, edges, outputs, models or seed); finish it with the same "
                                      f"graph, or use a new output directory")
                continue
            last[str(entry["id"])] = entry
        return last

    def peek_done(self, retry_failed: bool = True) -> set[str]:
        """The ids already done, read without changing anything (nodes restoring state need them early)."""
        return {record_id for record_id, entry in self._final_statuses().items()
                if _counts_as_done(entry.get("status"), retry_failed)}

    def _load(self, retry_failed: bool) -> dict[str, str]:
        statuses: dict[str, str] = {}
        for record_id, entry in self._final_statuses().items():
            status = str(entry.get("status"))
            if not _counts_as_done(status, retry_failed):
                continue
            statuses[record_id] = status
            self.done.add(record_id)
            self.previous[status] += 1
            if status in self.previous_reasons:
                self.previous_reasons[status][str(entry.get("reason", "unknown"))] += 1
        _truncate_partial_last_line(self.path)
        return statuses

    def mark(self, record_id: str, status: str, reason: str | None = None) -> None:
        entry = {"id": record_id, "status": status}
        if reason is not None:
            entry["reason"] = reason
        self._writer.write([entry])

    def sync(self) -> None:
        self._writer.sync()

    def close(self) -> None:
        self._writer.close()


def _counts_as_done(status: Any, retry_failed: bool) -> bool:
    return status in (WRITTEN, DROPPED_STATUS) or (status == FAILED_STATUS and not retry_failed)


def _status_of_file(name: str) -> str | None:
    """Which journaled outcome a data file's lines belong to; None: any (traces of every settled record)."""
    if name == TRACES:
        return None
    return {FAILED: FAILED_STATUS, DROPPED: DROPPED_STATUS}.get(name, WRITTEN)


def _line_id(row: Any) -> Any:
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("metadata"), dict):
        return row["metadata"].get("id")
    return row.get("id")


def _keep_lines_of(path: Path, status: str | None, statuses: dict[str, str]) -> int:
    """Keep the lines of records whose journaled outcome is this file's; drop the rest (records that run
    again, or a failure that a retry turned into a written record). Returns how many lines stay."""
    if not path.exists():
        return 0
    kept_lines = 0
    temporary = path.with_name(path.name + ".resume-tmp")
    with path.open(encoding="utf-8", errors="replace") as source, temporary.open("w", encoding="utf-8") as target:
        for line in source:
            try:
                record_id = _line_id(json.loads(line))
            except json.JSONDecodeError:
                continue
            outcome = statuses.get(str(record_id)) if record_id is not None else None
            if outcome is not None and status in (None, outcome):
                target.write(line if line.endswith("\n") else line + "\n")
                kept_lines += 1
    os.replace(temporary, path)
    return kept_lines


def _truncate_partial_last_line(path: Path) -> None:
    with path.open("rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        handle.seek(size - block)
        tail = handle.read(block)
        cut = tail.rfind(b"\n")
        handle.truncate(size - block + cut + 1 if cut >= 0 else 0)


def sync_directory(directory: Path) -> None:
    """fsync the directory itself, so files created in it survive a power loss too."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)

"""The output directory as a resumable ledger.

A record's lines are appended to the output files first and its id to journal.jsonl last. So after a
crash, kill -9 or Ctrl-C, every id in the journal is fully written, and any line whose id is not in the
journal (or that was cut mid-write) belongs to a record that will run again: `resume` removes those lines
before the run goes on. Every seed record ends up written exactly once.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError
from .pool import POOL_DIR

JOURNAL = "journal.jsonl"
FAILED = "failed.jsonl"
DROPPED = "dropped.jsonl"
MANIFEST = "manifest.json"


class JsonlWriter:
    """Append-only JSON lines, flushed per record so a killed process loses nothing it reported done."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: IO[str] | None = None
        self.count = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
        self._handle.flush()
        self.count += len(rows)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Journal:
    def __init__(self, directory: Path, config_hash: str):
        self.directory = directory
        self.config_hash = config_hash
        self.done: set[str] = set()
        self.previous: Counter[str] = Counter()
        self._writer = JsonlWriter(directory / JOURNAL)

    @property
    def path(self) -> Path:
        return self.directory / JOURNAL

    def start(self, *, resume: bool, overwrite: bool, data_files: list[str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and overwrite:
            for name in [*data_files, JOURNAL, MANIFEST]:
                (self.directory / name).unlink(missing_ok=True)
            shutil.rmtree(self.directory / POOL_DIR, ignore_errors=True)
            exists = False
        if exists and not resume:
            raise ConfigError(f"{self.directory} already holds a run; add --resume to finish it, "
                              f"--overwrite to start again, or choose another output directory")
        if exists:
            self._load()
            for name in data_files:
                self._keep_journaled_lines(self.directory / name)
        else:
            for name in data_files:  # stray files from a run that wrote nothing to its journal
                (self.directory / name).unlink(missing_ok=True)
            self._writer.write([{"config_hash": self.config_hash}])

    def _entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: its record was not done

    def peek_done(self) -> set[str]:
        """The ids already done, read without changing anything (nodes restoring state need them early)."""
        return {entry["id"] for entry in self._entries() if "id" in entry}

    def _load(self) -> None:
        for entry in self._entries():
            if "id" not in entry:
                if entry.get("config_hash", self.config_hash) != self.config_hash:
                    raise ConfigError(f"the graph changed since the run in {self.directory} started; "
                                      f"finish it with the same config, or use a new output directory")
                continue
            self.done.add(entry["id"])
            self.previous[entry["status"]] += 1
        _truncate_partial_last_line(self.path)

    def _keep_journaled_lines(self, path: Path) -> None:
        if not path.exists():
            return
        kept = path.with_suffix(".resume-tmp")
        with path.open(encoding="utf-8") as source, kept.open("w", encoding="utf-8") as target:
            for line in source:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                record_id = row.get("metadata", {}).get("id") if "metadata" in row else row.get("id")
                if record_id in self.done:
                    target.write(line)
        os.replace(kept, path)

    def mark(self, record_id: str, status: str) -> None:
        self._writer.write([{"id": record_id, "status": status}])

    def close(self) -> None:
        self._writer.close()


def _truncate_partial_last_line(path: Path) -> None:
    with path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)

"""Run-wide pools shared across records: Self-Instruct's growing task pool, MetaSynth's "differ from
everything so far". Bounded in size, guarded by an async lock, and persisted next to the journal so that
`--resume` continues with the pool the interrupted run had.

Each item remembers the record that added it. On resume, items of records the journal does not list as
done are forgotten: those records run again and add them again, and must not meet themselves.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections import deque
from collections.abc import Container, Iterable
from pathlib import Path
from typing import IO, Any

POOL_DIR = "pools"


class RecordPool:
    def __init__(self, name: str, max_size: int, path: Path | None, resume_done: Container[str] | None):
        self.name = name
        self.max_size = max_size
        self.items: deque[dict[str, Any]] = deque(maxlen=max_size)
        self.appended = 0  # items ever appended: the last len(items) of them are still in the pool
        self.lock = asyncio.Lock()
        self.path = path
        self._resume = resume_done is not None
        self._handle: IO[str] | None = None
        self.preloaded = False
        if path is not None and resume_done is not None and path.exists():
            self._load(path, resume_done)

    def _load(self, path: Path, done: Container[str]) -> None:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # cut by a kill mid-write
                if item.get("record") is None or item["record"] in done:
                    self._append(item)

    def preload(self, items: Iterable[dict[str, Any]]) -> None:
        """Items every run starts with (human seed tasks); not written to the pool file."""
        self.preloaded = True
        for item in items:
            self._append({**item, "record": None})

    def add(self, record_id: str, item: dict[str, Any]) -> None:
        """Call with `lock` held when the add depends on what was read (check-then-add)."""
        entry = {**item, "record": record_id}
        if self.path is not None:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self._resume:
                    self._rewrite()
                self._handle = self.path.open("a" if self._resume else "w", encoding="utf-8")
            self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._handle.flush()
        self._append(entry)

    def _append(self, entry: dict[str, Any]) -> None:
        self.items.append(entry)
        self.appended += 1

    def newest(self, count: int) -> list[dict[str, Any]]:
        """The last `count` items appended (fewer if the pool has dropped some), oldest first."""
        return list(itertools.islice(reversed(self.items), count))[::-1]

    def _rewrite(self) -> None:
        """On resume, keep only what was loaded (done records' items), so forgotten items stay forgotten.
        Written aside and renamed into place: a kill mid-rewrite must not cost the done records' items."""
        assert self.path is not None
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n"
                                     for item in self.items if item.get("record") is not None),
                             encoding="utf-8")
        os.replace(temporary, self.path)

    def sample(self, k: int, rng: random.Random, *, generated: bool | None = None) -> list[dict[str, Any]]:
        """Up to k items; `generated` True/False picks only items added by records / preloaded ones."""
        if generated is None:
            candidates = list(self.items)
        else:
            candidates = [item for item in self.items if (item.get("record") is not None) == generated]
        return rng.sample(candidates, min(k, len(candidates)))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

"""`exact`: SHA-1 of the normalised text (lowercased, punctuation removed, whitespace collapsed), kept on
disk (disk.py): 20 bytes of digest, a run number and the record id per kept text, no memory."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .base import Match, Origin, normalise
from .disk import DiskIndex, IndexFile


class ExactIndex(DiskIndex):
    quick = True  # a hash and one indexed look-up: tens of microseconds
    FILE = "exact.sqlite"
    LEGACY_FILE = "exact.json"  # what synthloom wrote before the index moved to disk; still read

    def __init__(self) -> None:
        self.file = IndexFile("exact", {"method": "exact"},
                              ["CREATE TABLE first (digest BLOB PRIMARY KEY, run INTEGER, record TEXT) WITHOUT ROWID"])

    def signature(self, text: str) -> str:
        return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()

    def check_and_add(self, signature: str, origin: Origin) -> Match | None:
        digest = bytes.fromhex(signature)
        db = self.file.db
        found = db.execute("SELECT run, record FROM first WHERE digest = ?", (digest,)).fetchone()
        if found is None:
            db.execute("INSERT INTO first VALUES (?, ?, ?)", (digest, self.file.run_id(origin.run), origin.record_id))
            self.file.added()
            return None
        first = self.file.origin(found[0], found[1])
        return Match(first.record_id, 1.0) if first != origin else None

    def encode(self, signature: str) -> str:
        return signature

    def decode(self, encoded: str) -> str:
        return encoded

    def _load_legacy(self, folder: Path) -> None:
        if (folder / self.LEGACY_FILE).exists():
            saved = json.loads((folder / self.LEGACY_FILE).read_text(encoding="utf-8"))["first"]
            for digest, (run, record_id) in saved.items():
                self.check_and_add(digest, Origin(run, record_id))

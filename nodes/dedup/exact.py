"""`exact`: SHA-1 of the normalised text (lowercased, punctuation removed, whitespace collapsed)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .base import Match, Origin, normalise
from .storage import write_atomically


class ExactIndex:
    FILE = "exact.json"

    def __init__(self) -> None:
        self.first: dict[str, Origin] = {}

    def signature(self, text: str) -> str:
        return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()

    def check_and_add(self, signature: str, origin: Origin) -> Match | None:
        first = self.first.setdefault(signature, origin)
        return Match(first.record_id, 1.0) if first != origin else None

    def encode(self, signature: str) -> str:
        return signature

    def decode(self, encoded: str) -> str:
        return encoded

    def save(self, folder: Path) -> None:
        first = {digest: [origin.run, origin.record_id] for digest, origin in self.first.items()}
        write_atomically(folder / self.FILE, lambda handle: handle.write(
            json.dumps({"method": "exact", "first": first}).encode("utf-8")))

    def load(self, folder: Path) -> None:
        path = folder / self.FILE
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))["first"]
            self.first = {digest: Origin(run, record_id) for digest, (run, record_id) in saved.items()}

"""`minhash`: datasketch MinHash-LSH over word n-gram shingles (`ngram`, fewer words for shorter texts); a
candidate is a duplicate when its estimated Jaccard similarity reaches `threshold` (default 0.8).

Kept on disk (disk.py): each kept text's sketch (num_perm * 4 bytes) and one row per LSH band (the band's
64-bit digest, with datasketch's choice of bands and rows), so memory stays flat however many texts are
kept. A look-up is one indexed query over the bands, then the candidates' sketches are compared exactly.
"""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from .base import Match, Origin, normalise
from .disk import DiskIndex, IndexFile
from .storage import load_arrays

MINHASH_SEED, MINHASH_SCHEME = 1, "affine32"


def band_digests(sketch: np.ndarray, ranges: list[tuple[int, int]]) -> list[int]:
    """A signed 64-bit digest (what SQLite stores) of each band of a sketch, its values as little-endian
    uint32."""
    values = sketch.astype("<u4")
    return [int.from_bytes(hashlib.blake2b(values[start:end].tobytes(), digest_size=8).digest(), "little",
                           signed=True) for start, end in ranges]


class MinHashIndex(DiskIndex):
    quick = False  # shingling a long text, and many candidates to compare: off the loop
    FILE = "minhash.sqlite"
    LEGACY_FILE = "minhash.npz"  # what synthloom wrote before the index moved to disk; still read

    def __init__(self, threshold: float, num_perm: int, ngram: int):
        from datasketch import MinHash, MinHashLSH
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self.settings = {"num_perm": num_perm, "ngram": ngram, "seed": MINHASH_SEED, "scheme": MINHASH_SCHEME}
        self.permutations = MinHash(num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations
        self.ranges: list[tuple[int, int]] = list(MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges)
        self.file = IndexFile("minhash", self.settings, [
            "CREATE TABLE sketches (key INTEGER PRIMARY KEY, sketch BLOB, run INTEGER, record TEXT)",
            "CREATE TABLE bands (band INTEGER, digest INTEGER, key INTEGER, PRIMARY KEY (band, digest, key)) "
            "WITHOUT ROWID"])
        # one point look-up per band (a row-value IN over all of them made SQLite scan the table)
        self._candidates = " UNION ".join("SELECT key FROM bands WHERE band = ? AND digest = ?"
                                          for _ in self.ranges) + " ORDER BY key"

    def signature(self, text: str) -> np.ndarray:
        from datasketch import MinHash
        words = normalise(text).split()
        size = min(self.ngram, len(words))  # short texts: shorter shingles, so they still have some
        shingles = {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)} if words else set()
        sketch = MinHash(self.num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME,
                         permutations=self.permutations)
        sketch.update_batch([shingle.encode("utf-8") for shingle in shingles])
        return np.asarray(sketch.hashvalues, dtype=np.uint32)

    def candidates(self, sketch: np.ndarray) -> list[int]:
        """Keys (insertion numbers, earliest first) sharing at least one band with the sketch: the keys
        datasketch's MinHashLSH.query would return."""
        digests = band_digests(sketch, self.ranges)
        parameters = [value for band, digest in enumerate(digests) for value in (band, digest)]
        return [key for (key,) in self.file.db.execute(self._candidates, parameters)]

    def check_and_add(self, signature: np.ndarray, origin: Origin) -> Match | None:
        keys = self.candidates(signature)
        best: tuple[float, Origin] | None = None
        if keys:
            rows = self.file.db.execute(f"SELECT key, sketch, run, record FROM sketches WHERE key IN "
                                        f"({', '.join('?' * len(keys))}) ORDER BY key", keys).fetchall()
            for _, sketch, run, record in rows:
                candidate = self.file.origin(run, record)
                if candidate == origin:
                    continue
                similarity = np.count_nonzero(np.frombuffer(sketch, dtype="<u4") == signature) / self.num_perm
                if best is None or similarity > best[0]:
                    best = (similarity, candidate)
        if best is not None and best[0] >= self.threshold:
            return Match(best[1].record_id, round(float(best[0]), 4))
        self._add(signature, origin)
        return None

    def _add(self, sketch: np.ndarray, origin: Origin) -> None:
        db = self.file.db
        key = db.execute("INSERT INTO sketches (sketch, run, record) VALUES (?, ?, ?)",
                         (sketch.astype("<u4").tobytes(), self.file.run_id(origin.run), origin.record_id)).lastrowid
        db.executemany("INSERT OR IGNORE INTO bands VALUES (?, ?, ?)",
                       [(band, digest, key) for band, digest in enumerate(band_digests(sketch, self.ranges))])
        self.file.added()

    def encode(self, signature: np.ndarray) -> str:
        return base64.b64encode(signature.astype("<u4").tobytes()).decode("ascii")

    def decode(self, encoded: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(encoded), dtype="<u4").astype(np.uint32)

    def _load_legacy(self, folder: Path) -> None:
        loaded = load_arrays(folder / self.LEGACY_FILE, self.settings)
        if loaded is not None:
            origins, arrays = loaded
            for sketch, origin in zip(arrays["hashvalues"].astype(np.uint32), origins, strict=True):
                self._add(sketch, origin)

    def _arguments(self) -> tuple[Any, ...]:
        return self.threshold, self.num_perm, self.ngram

"""`minhash`: datasketch MinHash-LSH over word n-gram shingles (`ngram`, fewer words for shorter texts); a
candidate is a duplicate when its estimated Jaccard similarity reaches `threshold` (default 0.8).

The sketches sit in one growing uint32 matrix (num_perm * 4 bytes a text, no object per text) and the
LSH buckets in sorted arrays (bands.py): about 700 bytes a kept text at the defaults with its origin,
never the text."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from .bands import BandIndex
from .base import Match, Origin, normalise
from .storage import load_arrays, save_arrays

MINHASH_SEED, MINHASH_SCHEME = 1, "affine32"


class MinHashIndex:
    FILE = "minhash.npz"

    def __init__(self, threshold: float, num_perm: int, ngram: int):
        from datasketch import MinHash, MinHashLSH
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self.settings = {"num_perm": num_perm, "ngram": ngram, "seed": MINHASH_SEED, "scheme": MINHASH_SCHEME}
        self.permutations = MinHash(num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME).permutations
        self.bands = BandIndex(MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges)  # its bands
        self.sketches = np.zeros((0, num_perm), dtype=np.uint32)
        self.origins: list[Origin] = []

    def signature(self, text: str) -> np.ndarray:
        from datasketch import MinHash
        words = normalise(text).split()
        size = min(self.ngram, len(words))  # short texts: shorter shingles, so they still have some
        shingles = {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)} if words else set()
        sketch = MinHash(self.num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME,
                         permutations=self.permutations)
        sketch.update_batch([shingle.encode("utf-8") for shingle in shingles])
        return np.asarray(sketch.hashvalues, dtype=np.uint32)

    def check_and_add(self, signature: np.ndarray, origin: Origin) -> Match | None:
        candidates = sorted(self.bands.query(signature))  # keys are insertion numbers: earliest first
        scored = [(np.count_nonzero(self.sketches[key] == signature) / self.num_perm, key)
                  for key in candidates if self.origins[key] != origin]
        best = max(scored, key=lambda pair: pair[0], default=None)
        if best is not None and best[0] >= self.threshold:
            return Match(self.origins[best[1]].record_id, round(float(best[0]), 4))
        self._add(signature[None, :], [origin])
        return None

    def _add(self, rows: np.ndarray, origins: list[Origin]) -> None:
        count = len(self.origins)
        needed = count + len(rows)
        if needed > len(self.sketches):  # grow by doubling, so adding stays cheap on average
            grown = np.zeros((max(needed, 2 * len(self.sketches), 64), self.num_perm), dtype=np.uint32)
            grown[:count] = self.sketches[:count]
            self.sketches = grown
        self.sketches[count:needed] = rows
        for key, row in enumerate(rows, start=count):
            self.bands.insert(key, row)
        self.origins.extend(origins)

    def encode(self, signature: np.ndarray) -> str:
        return base64.b64encode(signature.astype("<u4").tobytes()).decode("ascii")

    def decode(self, encoded: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(encoded), dtype="<u4").astype(np.uint32)

    def save(self, folder: Path) -> None:
        save_arrays(folder / self.FILE, self.settings, self.origins,
                    hashvalues=self.sketches[:len(self.origins)])

    def load(self, folder: Path) -> None:
        loaded = load_arrays(folder / self.FILE, self.settings)
        if loaded is not None:
            origins, arrays = loaded
            self._add(arrays["hashvalues"].astype(np.uint32), origins)

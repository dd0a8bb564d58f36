"""MinHash-LSH buckets without a Python set per bucket: the keys whose sketch shares a band with a query,
as datasketch's `MinHashLSH` finds them (its choice of bands and rows), held in one sorted array of
(band hash, key) per band: 12 bytes per band per kept text, about 110 bytes at the defaults, where
datasketch's in-memory storage takes about 3.4 KB.

New keys wait in a dict per band (about 1.4 KB a key over all bands) and are merged into the sorted arrays
when they number a sixteenth of them (or 1,024), so waiting keys add under 100 bytes a kept text, a merge
(one sort per band) comes after n/16 inserts, and a look-up is one binary search per band.
"""
from __future__ import annotations

import hashlib

import numpy as np

MERGE_AT_LEAST = 1024  # keys waiting before a merge is worth a sort


def band_hashes(hashvalues: np.ndarray, ranges: list[tuple[int, int]]) -> list[int]:
    """A 64-bit digest of each band of a sketch (the band's values as little-endian uint32)."""
    values = hashvalues.astype("<u4")
    return [int.from_bytes(hashlib.blake2b(values[start:end].tobytes(), digest_size=8).digest(), "little")
            for start, end in ranges]


class BandIndex:
    def __init__(self, ranges: list[tuple[int, int]]):
        self.ranges = list(ranges)
        self.hashes = [np.zeros(0, dtype=np.uint64) for _ in self.ranges]  # sorted, per band
        self.keys = [np.zeros(0, dtype=np.uint32) for _ in self.ranges]  # the key of each hash
        self.waiting: list[dict[int, list[int]]] = [{} for _ in self.ranges]
        self.waiting_count = 0

    def insert(self, key: int, hashvalues: np.ndarray) -> None:
        for band, digest in enumerate(band_hashes(hashvalues, self.ranges)):
            self.waiting[band].setdefault(digest, []).append(key)
        self.waiting_count += 1
        if self.waiting_count >= max(MERGE_AT_LEAST, len(self.hashes[0]) // 16):
            self._merge()

    def query(self, hashvalues: np.ndarray) -> set[int]:
        """Keys sharing at least one band with the sketch."""
        found: set[int] = set()
        for band, digest in enumerate(band_hashes(hashvalues, self.ranges)):
            found.update(self.waiting[band].get(digest, ()))
            hashes, value = self.hashes[band], np.uint64(digest)
            low, high = np.searchsorted(hashes, value, "left"), np.searchsorted(hashes, value, "right")
            if high > low:
                found.update(self.keys[band][low:high].tolist())
        return found

    def _merge(self) -> None:
        for band, waiting in enumerate(self.waiting):
            digests = np.fromiter((digest for digest, keys in waiting.items() for _ in keys), dtype=np.uint64)
            keys = np.fromiter((key for keys in waiting.values() for key in keys), dtype=np.uint32)
            hashes = np.concatenate([self.hashes[band], digests])
            order = np.argsort(hashes, kind="stable")
            self.hashes[band] = hashes[order]
            self.keys[band] = np.concatenate([self.keys[band], keys])[order]
            waiting.clear()
        self.waiting_count = 0

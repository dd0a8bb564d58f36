"""`dedup`: drop records whose text repeats one seen before in this run (or, with `index:`, in earlier runs).

Streaming keep-first: the first record of a group of duplicates to *arrive* goes on, later ones are dropped
with `Drop("duplicate", {"duplicate_of": id, "similarity": x})`, so the manifest counts the dedup rate
(itself a diversity signal, methods.md §2.4). Under concurrency "first to arrive" depends on timing; run with
`--max-in-flight 1` to keep the copy earliest in seed order every time.

- node.py: the node; the look-up-and-add runs in a worker thread under the index's lock.
- exact.py, minhash.py, embedding.py: one index kind each (what a signature is, how it matches).
- disk.py: where `exact` and `minhash` keep their entries: SQLite, so memory stays flat at millions of
  kept texts; an `index:` folder holds a copy of that file, checked to hold only an index's tables.
- the signatures a run kept are journaled beside its output (`synthloom.engine.kept_log`) for `--resume`.
- storage.py: `embedding`'s `index:` file (plain arrays, never pickles), written atomically; also the
  earlier format of the other two, still read.
"""
from __future__ import annotations

from .embedding import ENCODER_LOCK, sentence_encoder
from .node import Dedup, DedupParams

__all__ = ["ENCODER_LOCK", "Dedup", "DedupParams", "sentence_encoder"]

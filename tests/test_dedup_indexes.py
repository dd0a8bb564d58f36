"""The dedup indexes on their own: the compact MinHash buckets find what datasketch's MinHashLSH finds,
and a kept text costs a few hundred bytes of signature, not its text."""
from __future__ import annotations

import tracemalloc

from datasketch import LeanMinHash, MinHashLSH
from synthloom_nodes.dedup.bands import BandIndex
from synthloom_nodes.dedup.base import Origin
from synthloom_nodes.dedup.minhash import MINHASH_SCHEME, MINHASH_SEED, MinHashIndex

from tests.novelty_corpus import corpus


def test_the_bands_find_the_candidates_datasketch_finds() -> None:
    """6,000 texts (a third near-copies): each query, before its text is added, returns the same keys
    from the sorted arrays (merged several times) and from the waiting keys as MinHashLSH does."""
    index = MinHashIndex(0.8, 128, 5)
    reference = MinHashLSH(threshold=0.8, num_perm=128)
    bands = BandIndex(reference.hashranges)
    found_some = 0
    for key, text in enumerate(corpus(6000, seed=21, planted=0.35)):
        sketch = index.signature(text)
        lean = LeanMinHash(seed=MINHASH_SEED, hashvalues=sketch, scheme=MINHASH_SCHEME)
        expected = set(reference.query(lean))
        assert bands.query(sketch) == expected, key
        found_some += bool(expected)
        reference.insert(key, lean)
        bands.insert(key, sketch)
    assert len(bands.hashes[0]) >= 4096 and found_some > 200  # merged at least once; many texts had candidates


def test_a_kept_text_costs_its_signature_not_its_text() -> None:
    texts = corpus(8000, seed=4, planted=0.0, longest=200)  # long texts: about 1 KB each
    index = MinHashIndex(0.8, 128, 5)
    signatures = [index.signature(text) for text in texts]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for number, signature in enumerate(signatures):
        index.check_and_add(signature, Origin("run", f"r{number}"))
    per_text = (tracemalloc.get_traced_memory()[0] - before) / len(texts)
    tracemalloc.stop()
    assert per_text < 1024, per_text  # 512 B of sketch, ~110 B of buckets, the origin; datasketch's: ~3.9 KB
    assert sum(map(len, texts)) / len(texts) > 600

"""The dedup indexes on their own: the MinHash bands on disk find what datasketch's MinHashLSH finds, a
kept text costs disk, not memory, and a large index never holds up the event loop."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHashLSH
from synthloom.graph.context import RunContext
from synthloom.models.clients import ModelPool
from synthloom_nodes.dedup import Dedup, DedupParams
from synthloom_nodes.dedup.base import Origin
from synthloom_nodes.dedup.disk import CACHE_KIB
from synthloom_nodes.dedup.exact import ExactIndex
from synthloom_nodes.dedup.minhash import MINHASH_SCHEME, MINHASH_SEED, MinHashIndex
from synthloom_nodes.dedup.storage import save_arrays

from tests.novelty_corpus import corpus
from tests.test_novelty_index import heartbeat_gaps


def test_the_bands_find_the_candidates_datasketch_finds() -> None:
    """6,000 texts (a third near-copies): before each text is checked, the index's band look-up returns
    the keys MinHashLSH (given the same kept texts) returns."""
    index = MinHashIndex(0.8, 128, 5)
    reference = MinHashLSH(threshold=0.8, num_perm=128)
    found_some = kept = 0
    for number, text in enumerate(corpus(6000, seed=21, planted=0.35)):
        sketch = index.signature(text)
        lean = LeanMinHash(seed=MINHASH_SEED, hashvalues=sketch, scheme=MINHASH_SCHEME)
        expected = set(reference.query(lean))
        assert set(index.candidates(sketch)) == expected, number
        found_some += bool(expected)
        if index.check_and_add(sketch, Origin("run", f"r{number}")) is None:
            kept += 1
            reference.insert(kept, lean)  # the index's keys are its rows, numbered from 1
    assert found_some > 200 and 3000 < kept < 6000  # many texts had candidates; near-copies were dropped


MEMORY_PROBE = """
import json, os, sys
from synthloom_nodes.dedup.base import Origin
from synthloom_nodes.dedup.exact import ExactIndex
from synthloom_nodes.dedup.minhash import MinHashIndex
from tests.novelty_corpus import corpus

method, count = sys.argv[1], int(sys.argv[2])
texts = corpus(count, seed=4, planted=0.0)
index = ExactIndex() if method == "exact" else MinHashIndex(0.8, 128, 5)
signatures = [index.signature(text) for text in texts]
del texts

def resident() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

before, file_before = resident(), os.path.getsize(index.file.path)
kept = sum(index.check_and_add(signature, Origin("run", f"r{number}")) is None
           for number, signature in enumerate(signatures))
print(json.dumps({"kept": kept, "grown": resident() - before, "file": os.path.getsize(index.file.path) - file_before,
                  "cache_size": index.file.db.execute("PRAGMA cache_size").fetchone()[0]}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident size from /proc")
@pytest.mark.parametrize(("method", "count", "in_memory"), [("exact", 30_000, 250), ("minhash", 20_000, 700)])
def test_a_kept_text_costs_disk_not_memory(method: str, count: int, in_memory: int) -> None:
    """The entries live in SQLite on disk, whose page cache is bounded: a fresh process keeping `count` texts
    grows its resident memory by at most what the cache can hold (the smaller of its size and the file's)
    plus 2 MB, where the in-memory index took about `in_memory` bytes per kept text (7.5 MB and 14 MB here,
    at least twice the bound); the index file grows by what was kept. Measured on the process (tracemalloc
    would not see SQLite's own allocations)."""
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, method, str(count)], capture_output=True,
                          text=True, timeout=280, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert probe["kept"] > 0.99 * count and probe["cache_size"] == -CACHE_KIB
    assert probe["file"] > 16 * count, f"the index file grew only {probe['file']} bytes"
    bound = min(probe["file"], CACHE_KIB * 1024) + 2 * 2**20
    assert in_memory * count > 2 * bound  # the measure tells the two designs apart
    assert probe["grown"] < bound, f"resident memory grew {probe['grown'] / 2**20:.1f} MB (bound {bound / 2**20:.1f})"


async def test_the_event_loop_keeps_beating_while_dedup_loads_and_checks(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a 30,000-text MinHash index (the earlier .npz format: about 2 s of inserting its bands) and
    checking 200 records, 16 at a time, all happen in worker threads: a 10 ms heartbeat is never held up
    for 500 ms."""
    rng = np.random.default_rng(3)
    sketches = rng.integers(0, 2**32 - 1, size=(30_000, 128), dtype=np.uint32)  # plain arrays, as saved
    settings = {"num_perm": 128, "ngram": 5, "seed": MINHASH_SEED, "scheme": MINHASH_SCHEME}
    save_arrays(tmp_path / "idx" / MinHashIndex.LEGACY_FILE, settings,
                [Origin("earlier", f"old{n}") for n in range(len(sketches))], hashvalues=sketches)
    monkeypatch.chdir(tmp_path)  # a node made outside a graph: its index folder is relative to here,
    monkeypatch.setenv("SYNTHLOOM_ALLOW_READ", str(tmp_path))  # in a folder the user allowed
    node = Dedup("unique", DedupParams(field="text", method="minhash", index="idx"))
    ctx = RunContext(models=ModelPool({}), base_dir=tmp_path)
    texts = corpus(200, seed=9, planted=0.5)
    slots = asyncio.Semaphore(16)

    async def check(number: int, text: str) -> object:
        async with slots:
            return await node.run({"id": f"r{number}", "text": text}, ctx)

    async def work() -> list[object]:
        await node.setup(ctx)
        return await asyncio.gather(*(check(n, text) for n, text in enumerate(texts)))

    gaps = await heartbeat_gaps(work())
    index = (await ctx.shared_index("dedup:unique")).local
    assert index.file.db.execute("SELECT COUNT(*) FROM sketches").fetchone()[0] > 30_000  # loaded, kept some
    assert len(gaps) > 20 and sum(gap > 0.5 for gap in gaps) == 0, [round(gap, 3) for gap in gaps if gap > 0.05]


def test_a_killed_run_leaves_no_index_file_behind(tmp_path: Path) -> None:
    """The working file of an index sits in a temporary folder named with its process; after a kill -9 the
    next index made on the machine removes it."""
    script = ("import os, sys\nfrom synthloom_nodes.dedup.exact import ExactIndex\nindex = ExactIndex()\n"
              "print(index.file.path, flush=True)\nos.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    left = Path(done.stdout.strip())
    assert done.returncode == -9 and left.exists()
    ExactIndex()
    assert not left.parent.exists()

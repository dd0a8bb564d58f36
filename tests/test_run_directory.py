"""The run directory is watched (issue 19): a directory removed or replaced mid-run stops the run at once
with one line and exit 1, without re-creating it, and `--resume` then finishes the run; a journal whose cut
last line is longer than the block the tail is searched in keeps every whole line before it."""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixture_server import FakeOpenAI
from tests.test_exactly_once import TOPICS, cli, record_ids, run_args, start
from tests.test_resume import wait_for_journal
from tests.test_run import chain_graph, lines


@pytest.mark.parametrize("how", ["vanished", "replaced"])
def test_a_directory_that_vanishes_or_is_replaced_stops_the_run_and_resume_finishes_it(
        how: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.05)
    spec = chain_graph(server, max_concurrency=2)
    graph = write_graph(spec, TOPICS[:200])
    out = tmp_path / "out"
    process = start(*run_args(graph, out))
    wait_for_journal(out, 5)
    if how == "vanished":
        shutil.rmtree(out)
    else:
        out.rename(tmp_path / "moved")
        out.mkdir()
    started = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert process.returncode == 1, stderr
    said = "vanished" if how == "vanished" else "was replaced by another folder"
    assert len(errors) == 1 and f"the output directory {out} {said}" in errors[0] and "--resume" in errors[0]
    assert "Traceback" not in stderr and time.monotonic() - started < 30
    if how == "vanished":
        assert not out.exists()  # the manifest writer did not re-create it
    else:
        assert list(out.iterdir()) == []  # nothing written into the folder that took its place
        moved = json.loads((tmp_path / "moved" / "manifest.json").read_text()) \
            if (tmp_path / "moved" / "manifest.json").exists() else None
        assert moved is None or moved["status"] != "completed"

    done = cli(*run_args(graph, out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert record_ids(out, "sft") == Counter({row["id"]: 1 for row in TOPICS[:200]})
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 200


def test_a_cut_last_journal_line_longer_than_a_mebibyte_loses_only_itself(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(chain_graph(server), TOPICS[:30])
    out = tmp_path / "out"
    assert cli(*run_args(graph, out)).returncode == 0
    asked = server.requests
    journal = out / "journal.jsonl"
    whole = journal.read_text().splitlines()
    with journal.open("a") as handle:
        handle.write('{"id": "t9999", "status": "written", "pad": "' + "x" * 1_500_000)  # cut by a kill
    done = cli(*run_args(graph, out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert server.requests == asked  # nothing ran again: every whole line was kept
    assert journal.read_text().splitlines()[:len(whole)] == whole
    assert len(lines(out / "sft.jsonl")) == 30


@pytest.mark.parametrize("marker", ["ray.json", "shards"])
def test_a_one_process_run_refuses_a_ray_run_directory_as_the_ray_driver_refuses_a_one_process_one(
        marker: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """One set of refusals for both run paths (store/refusals.py): a `run --ray` plan (or its shards folder
    alone) is not written over by a one-process run, and `--overwrite` clears it like any other run's files."""
    import synthloom
    from synthloom.errors import ConfigError
    graph = write_graph(chain_graph(fake_llm()), TOPICS[:3])
    out = tmp_path / "out"
    out.mkdir()
    if marker == "ray.json":
        (out / marker).write_text('{"shards": 2, "config_hash": "x"}', encoding="utf-8")
    else:
        (out / marker / "0").mkdir(parents=True)
    said = "holds a run made with --ray" if marker == "ray.json" else "holds shards but no run journal"
    with pytest.raises(ConfigError, match=said):
        synthloom.run(graph, out)
    assert synthloom.run(graph, out, overwrite=True).manifest["counts"]["written"] == 3
    assert not (out / marker).exists()

"""Exactly once under every fault, through the real CLI: Ctrl-C (once, twice), SIGTERM, kill -9 loops, repeated
seed rows, failed records retried by --resume, a full or read-only disk, two runs at once, unsafe output names,
and a resume guard that only cares about what shapes the data."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixture_server import FakeOpenAI
from tests.test_resume import wait_for_journal
from tests.test_run import chain_graph, lines

TOPICS = [{"id": f"t{index:04d}", "topic": f"topic {index}"} for index in range(300)]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "synthloom.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_args(graph: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(graph), "-o", str(out), "-q", "--no-cache", *extra]


def record_ids(out: Path, name: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    for row in lines(out / f"{name}.jsonl"):
        ids[row["metadata"]["id"] if "metadata" in row else row["id"]] += 1
    return ids


def places(out: Path, outputs: list[str]) -> Counter[str]:
    """How many times each record id appears across the outputs, dropped.jsonl and failed.jsonl."""
    seen: Counter[str] = Counter()
    for name in [*outputs, "dropped", "failed"]:
        seen.update(record_ids(out, name))
    return seen


# -- Ctrl-C, SIGTERM -------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["double-ctrl-c", "sigterm"])
def test_records_cut_short_by_a_stop_are_never_journaled_as_failed(
        how: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Most records wait for one of 2 model slots when the stop comes; none of them may be called failed."""
    server = fake_llm(latency=0.03, hold=["^Ask about topic 119$"])  # the run cannot end before the stop
    spec = chain_graph(server, max_concurrency=2, timeout=600)
    spec["run"] = {"max_in_flight": 100, "drain_seconds": 30}
    graph = write_graph(spec, TOPICS[:120])
    out = tmp_path / "out"
    process = start(*run_args(graph, out))
    wait_for_journal(out, 5)
    if how == "double-ctrl-c":
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    assert lines(out / "failed.jsonl") == []
    server.release()
    done = cli(*run_args(graph, out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert record_ids(out, "sft") == Counter({row["id"]: 1 for row in TOPICS[:120]})
    assert lines(out / "failed.jsonl") == []


CANCEL_HIDING_NODES = '''
import asyncio
import os
from pathlib import Path

from synthloom import node


@node(writes=["waited"])
async def hides_cancellation(index):
    """Turns a cancellation into an ordinary exception, as some client libraries do."""
    (Path(os.environ["STARTED_DIR"]) / str(index)).touch()
    try:
        await asyncio.sleep(120)
    except asyncio.CancelledError:
        raise RuntimeError("connection closed") from None
    return {"waited": True}
'''


def test_a_node_that_hides_a_cancellation_still_leaves_its_record_unsettled(tmp_path: Path) -> None:
    """A second Ctrl-C cancels the records in flight; a node that answers the cancellation with an ordinary
    exception must not get its record journaled as failed (--resume would then never run it again)."""
    (tmp_path / "hiding_nodes.py").write_text(CANCEL_HIDING_NODES)
    spec = {"name": "hiding", "seed": {"source": {"type": "none", "rows": 4}},
            "nodes": {"wait": {"type": "hiding_nodes:hides_cancellation"}},
            "outputs": [{"name": "raw", "format": "raw"}], "run": {"drain_seconds": 60}}
    graph = tmp_path / "hiding.yaml"
    graph.write_text(yaml.safe_dump(spec))
    out, started = tmp_path / "out", tmp_path / "started"
    started.mkdir()
    env = {**os.environ, "STARTED_DIR": str(started),
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-m", "synthloom.cli", *run_args(graph, out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while len(list(started.iterdir())) < 4 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(started.iterdir())) == 4, "the four records never reached the node"
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert lines(out / "failed.jsonl") == []
    journaled = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert [entry for entry in journaled if "id" in entry] == []
    assert json.loads((out / "manifest.json").read_text())["counts"]["failed"] == 0


SLOW_NODES = '''
import time

from synthloom import node


@node(writes=["slept"])
def sleepy(index):
    """A sync node that holds its worker thread for a long time."""
    time.sleep(40)
    return {"slept": True}


@node(writes=["spun"])
async def spin(index):
    """An async node that keeps the event loop busy and never yields."""
    end = time.monotonic() + 40
    while time.monotonic() < end:
        pass
    return {"spun": True}
'''


@pytest.mark.parametrize("node_type", ["sleepy", "spin"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_ends_the_process_soon_after_the_drain(node_type: str, signum: int, tmp_path: Path) -> None:
    """A worker thread still sleeping, or a loop some node keeps busy, must not hold the process for long."""
    (tmp_path / "slow_nodes.py").write_text(SLOW_NODES)
    spec = {"name": "slow", "seed": {"source": {"type": "none", "rows": 4}},
            "nodes": {"slow": {"type": f"slow_nodes:{node_type}"}},
            "outputs": [{"name": "raw", "format": "raw"}], "run": {"drain_seconds": 1}}
    graph = tmp_path / "slow.yaml"
    graph.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-m", "synthloom.cli", *run_args(graph, out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (out / "journal.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the node is running now
    sent = time.monotonic()
    process.send_signal(signum)
    process.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert process.returncode == 130
    assert waited < 15, f"took {waited:.1f}s to stop (drain 1 s; the node runs 40 s)"


# -- repeated seed rows --------------------------------------------------------------------------------

def test_repeated_rows_are_each_written_once_across_a_resume(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.01)
    server.keep_bodies = False
    rows = [{"topic": f"topic {index % 300}"} for index in range(1200)]  # no ids: 4 identical copies of each
    graph = write_graph(chain_graph(server, max_concurrency=16), rows)
    out = tmp_path / "out"
    process = start(*run_args(graph, out))
    wait_for_journal(out, 300)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    done = cli(*run_args(graph, out, "--resume"))
    assert done.returncode == 0, done.stderr
    ids = record_ids(out, "sft")
    assert len(ids) == 1200 and max(ids.values()) == 1
    topics = Counter(row["messages"][0]["content"] for row in lines(out / "sft.jsonl"))
    assert set(topics.values()) == {4}
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 1200


# -- failed records and --resume ---------------------------------------------------------------------

def test_resume_retries_failed_records_and_a_run_that_only_failed_exits_1(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_status=400)
    graph = write_graph(chain_graph(server), TOPICS[:20])
    out = tmp_path / "out"
    first = cli(*run_args(graph, out))
    assert first.returncode == 1 and "20 of 20 records failed" in first.stderr and "--resume" in first.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert len(lines(out / "failed.jsonl")) == 20

    kept = cli(*run_args(graph, out, "--resume", "--no-retry-failed"))
    assert kept.returncode == 1 and server.requests == 20  # nothing was tried again
    assert len(lines(out / "failed.jsonl")) == 20

    server.fail_status = None
    retried = cli(*run_args(graph, out, "--resume"))
    assert retried.returncode == 0, retried.stderr
    assert lines(out / "failed.jsonl") == []  # only records still failed stay there
    assert record_ids(out, "sft") == Counter({row["id"]: 1 for row in TOPICS[:20]})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["counts"]["written"] == 20 and manifest["counts"]["failed"] == 0
    assert manifest["counts"]["failure_types"] == {}


def test_a_retry_cut_short_never_loses_the_failures_it_was_retrying(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """A --resume that retries failed records is killed before it settles them; a later
    --no-retry-failed must still find every one of them in failed.jsonl."""
    server = fake_llm(fail_status=400)
    graph = write_graph(chain_graph(server), TOPICS[:20])
    out = tmp_path / "out"
    assert cli(*run_args(graph, out)).returncode == 1
    server.latency = 30  # the retry is still waiting for the server when it dies
    retry = start(*run_args(graph, out, "--resume"))
    deadline = time.monotonic() + 60
    while server.requests < 21 and time.monotonic() < deadline:
        time.sleep(0.05)
    retry.send_signal(signal.SIGKILL)
    retry.wait(30)
    server.latency = 0
    asked = server.requests
    kept = cli(*run_args(graph, out, "--resume", "--no-retry-failed"))
    assert kept.returncode == 1
    assert record_ids(out, "failed") == Counter({row["id"]: 1 for row in TOPICS[:20]})
    assert server.requests == asked  # issue 19: --no-retry-failed means it, after a retry cut short too
    assert json.loads((out / "manifest.json").read_text())["counts"]["failed"] == 20

    server.fail_status = None  # and a later retry still finds them, and settles each exactly once
    retried = cli(*run_args(graph, out, "--resume"))
    assert retried.returncode == 0, retried.stderr
    assert lines(out / "failed.jsonl") == [] and record_ids(out, "sft") == Counter(
        {row["id"]: 1 for row in TOPICS[:20]})


def test_a_small_run_mostly_failing_exits_1(fake_llm: Callable[..., FakeOpenAI],
                                            write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Fewer records than the failure window: the end-of-run judgement still catches it."""
    server = fake_llm(fail_every={3: 400, 2: 400})  # two of every three requests fail at once
    graph = write_graph(chain_graph(server), TOPICS[:10])
    done = cli(*run_args(graph, tmp_path / "out"))
    assert done.returncode == 1 and "records failed" in done.stderr


# -- the manifest adds up over parts -------------------------------------------------------------------

def test_manifest_totals_accumulate_over_resumed_parts(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.02, hold=["^Ask about topic 299$"])  # the first part cannot end before the stop
    server.keep_bodies = False
    spec = chain_graph(server, max_concurrency=8, timeout=600)
    spec["nodes"]["gate"] = {"type": "filter", "when": "'7' not in topic", "reason": "has a seven"}
    spec["edges"].append(["answer", "gate"])
    spec["run"] = {"drain_seconds": 1}
    graph = write_graph(spec, TOPICS)
    out = tmp_path / "out"
    process = start(*run_args(graph, out))
    wait_for_journal(out, 60)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    server.release()
    assert cli(*run_args(graph, out, "--resume")).returncode == 0
    finished = json.loads((out / "manifest.json").read_text())
    again = cli(*run_args(graph, out, "--resume"))  # nothing left to do: totals must not reset
    assert again.returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    sevens = sum("7" in row["topic"] for row in TOPICS)
    for figures in (finished, manifest):
        assert figures["models"]["w"]["calls"] == server.successes == 600
        assert figures["nodes"]["answer"]["llm"]["calls"] == 300
        assert figures["counts"]["dropped"] == sevens
        assert figures["counts"]["drop_reasons"] == {"gate: has a seven": sevens}
        assert figures["counts"]["written"] == 300 - sevens
        assert figures["counts"]["outputs"]["sft"] == 300 - sevens
    assert len(manifest["parts"]) == 3 and manifest["parts"][0]["status"] == "interrupted"
    assert manifest["elapsed_s"] >= finished["elapsed_s"] > manifest["parts"][-1]["elapsed_s"]


# -- the disk ---------------------------------------------------------------------------------------

@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the write-error path is not exercised")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_disk_stops_the_run_and_resume_finishes_it_exactly_once(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.005)
    server.keep_bodies = False
    spec = chain_graph(server, max_concurrency=8)
    graph = write_graph(spec, TOPICS)
    with small_disk(tmp_path / "disk", "96k") as disk:
        out = disk / "out"
        full = cli(*run_args(graph, out))
        assert full.returncode == 1, full.stderr
        assert "No space left on device" in full.stderr and "--resume" in full.stderr
        assert "Traceback" not in full.stderr and "exception was never retrieved" not in full.stderr
        assert len(full.stderr.strip().splitlines()) == 1
        requests_when_full = server.requests
        assert requests_when_full < 2 * len(TOPICS)  # it stopped calling the model
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        done = cli(*run_args(graph, out, "--resume"))
        assert done.returncode == 0, done.stderr
        assert record_ids(out, "sft") == Counter({row["id"]: 1 for row in TOPICS})
        assert record_ids(out, "raw") == Counter({row["id"]: 1 for row in TOPICS})
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"]["written"] == len(TOPICS) and manifest["status"] == "completed"


def journaled(out: Path) -> Counter[str]:
    """The statuses of the records the journal settled (its last word on each id)."""
    last: dict[str, str] = {}
    for line in (out / "journal.jsonl").read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line the full disk cut: its record is not settled
        if "id" in entry:
            last[entry["id"]] = entry["status"]
    return Counter(last.values())


@pytest.mark.parametrize("size", ["64k", "96k", "128k"])
def test_after_a_full_disk_the_summary_counts_what_the_journal_holds(
        size: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Records settled in the tick whose write failed are not in the journal (--resume runs them again),
    so the summary and the manifest must not count them either."""
    server = fake_llm(latency=0.005)
    server.keep_bodies = False
    graph = write_graph(chain_graph(server, max_concurrency=8), TOPICS)
    with small_disk(tmp_path / "disk", size) as disk:
        out = disk / "out"
        full = cli(*run_args(graph, out))
        assert full.returncode == 1 and "No space left on device" in full.stderr, full.stderr
        summary = re.search(r"(\d+) records written \(sft: (\d+), raw: (\d+)\), (\d+) failed", full.stdout)
        assert summary is not None, full.stdout
        written = journaled(out)["written"]
        assert written < len(TOPICS)
        assert [int(figure) for figure in summary.groups()] == [written, written, written, journaled(out)["failed"]]


def test_a_read_only_output_directory_is_one_line(fake_llm: Callable[..., FakeOpenAI],
                                                  write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(chain_graph(server), TOPICS[:3])
    with small_disk(tmp_path / "disk", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        done = cli(*run_args(graph, disk / "out"))
        assert done.returncode == 1
        assert "Read-only file system" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert server.requests == 0


# -- files outside the run ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escape", "/tmp/absolute", "journal", "failed", "a.b", ""])
def test_output_names_cannot_reach_outside_the_run_or_its_own_files(
        name: str, write_graph: Callable[..., Path]) -> None:
    spec = {"name": "n", "seed": {"source": {"type": "none", "rows": 1}},
            "nodes": {"s": {"type": "sampler", "slots": {"x": ["a"]}}},
            "outputs": [{"name": name, "format": "raw"}]}
    done = cli("validate", str(write_graph(spec)))
    assert done.returncode == 2 and "outputs.0.name" in done.stderr and "Traceback" not in done.stderr


def test_two_outputs_of_one_name_are_refused(write_graph: Callable[..., Path]) -> None:
    spec = {"name": "n", "seed": {"source": {"type": "none", "rows": 1}},
            "nodes": {"s": {"type": "sampler", "slots": {"x": ["a"]}}},
            "outputs": [{"name": "same", "format": "raw"}, {"name": "same", "format": "raw"}]}
    done = cli("validate", str(write_graph(spec)))
    assert done.returncode == 2 and "two outputs are named 'same'" in done.stderr


def test_a_fresh_run_never_deletes_files_it_did_not_write(fake_llm: Callable[..., FakeOpenAI],
                                                          write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(chain_graph(server), TOPICS[:3])
    out = tmp_path / "out"
    out.mkdir()
    (out / "sft.jsonl").write_text("my own hand-made data\n")
    done = cli(*run_args(graph, out))
    assert done.returncode == 2 and "sft.jsonl" in done.stderr and "--overwrite" in done.stderr
    assert (out / "sft.jsonl").read_text() == "my own hand-made data\n" and server.requests == 0
    assert cli(*run_args(graph, out, "--overwrite")).returncode == 0
    assert len(lines(out / "sft.jsonl")) == 3


@pytest.mark.parametrize("name", ["README.md.tmp", "manifest.json.tmp", ".synthloom-ids.sqlite"])
def test_a_fresh_run_refuses_a_foreign_temporary_or_ledger_file(
        name: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """The run writes files of these names too (a card or manifest on its way in, the id ledger); one it did
    not write is someone else's, refused like any other stray file, and deleted only by --overwrite."""
    server = fake_llm()
    graph = write_graph(chain_graph(server), TOPICS[:3])
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("not yours\n")
    done = cli(*run_args(graph, out))
    assert done.returncode == 2 and name in done.stderr and "--overwrite" in done.stderr, done.stderr
    assert (out / name).read_text() == "not yours\n" and server.requests == 0
    assert cli(*run_args(graph, out, "--overwrite")).returncode == 0
    assert len(lines(out / "sft.jsonl")) == 3 and not (out / name).exists()


@pytest.mark.parametrize("name", ["sft.jsonl", "README.md"])
def test_a_fresh_run_refuses_a_dangling_link_where_its_files_go(
        name: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Appending through a link named like an output would create a file wherever the link points."""
    server = fake_llm()
    graph = write_graph(chain_graph(server), TOPICS[:3])
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(tmp_path / "elsewhere")
    done = cli(*run_args(graph, out))
    assert done.returncode == 2 and name in done.stderr, done.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_two_runs_into_one_directory_cannot_overlap(fake_llm: Callable[..., FakeOpenAI],
                                                    write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(hold=["^Ask about topic 199$"])  # the first run cannot end before the test lets it
    graph = write_graph(chain_graph(server, max_concurrency=4, timeout=600), TOPICS[:200])  # held, not timed out
    out = tmp_path / "out"
    first = start(*run_args(graph, out))
    wait_for_journal(out, 5)
    second = cli(*run_args(graph, out, "--resume"))
    assert first.poll() is None, "the first run ended before the second started"
    assert second.returncode == 2 and "in use by another run" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    server.release()
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert record_ids(out, "sft") == Counter({row["id"]: 1 for row in TOPICS[:200]})
    third = cli(*run_args(graph, out, "--resume"))  # the lock went with the process
    assert third.returncode == 0, third.stderr


# -- the resume guard ------------------------------------------------------------------------------------

def test_resume_takes_speed_and_place_changes_but_refuses_data_changes(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server, other = fake_llm(), fake_llm()
    def child(template: str) -> None:
        (tmp_path / "child.yaml").write_text(yaml.safe_dump({"name": "child", "nodes": {"shout": {
            "type": "llm", "model": "w", "output": "loud",
            "messages": [{"role": "user", "content": template}]}}, "models": spec["models"]}))

    spec = chain_graph(server)
    child("Shout {{ text }}")
    spec["nodes"]["sub"] = {"type": "subgraph", "graph": "child.yaml", "inputs": {"text": "answer"},
                            "outputs": {"loud": "loud"}}
    spec["edges"].append(["answer", "sub"])
    graph = write_graph(spec, TOPICS[:5])
    out = tmp_path / "out"
    assert cli(*run_args(graph, out)).returncode == 0
    for change in (["--set", "models.w.max_concurrency=3", "--set", "run.drain_seconds=2"],
                   ["--set", "models.w.timeout=9", "--set", "models.w.max_retries=1"],
                   ["--endpoint", other.url, "--set", f"models.w.model={server.model}"]):
        resumed = cli(*run_args(graph, out, "--resume", *change))
        assert resumed.returncode == 0, (change, resumed.stderr)
    changed = cli(*run_args(graph, out, "--resume", "--set", "nodes.answer.params.temperature=0.1"))
    assert changed.returncode == 2 and "the graph changed since the run" in changed.stderr
    child("Whisper {{ text }}")
    edited = cli(*run_args(graph, out, "--resume"))
    assert edited.returncode == 2 and "the graph changed since the run" in edited.stderr


# -- the kill loop ---------------------------------------------------------------------------------------

def journal_headers(out: Path) -> int:
    """The parts of the run that got going: each writes one header line once its set-up is done."""
    journal = out / "journal.jsonl"
    return journal.read_bytes().count(b'"config_hash"') if journal.exists() else 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 12 parts, each allowed 120 s to start and 60 s to stop, then a 300 s last part
def test_kill_loop_every_seed_row_lands_in_exactly_one_place(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """10 kill -9 at random points and 2 double Ctrl-Cs over one run with repeated seed rows (no ids), a
    dedup node and injected 400s; then every row is in exactly one of the outputs, dropped or failed."""
    server = fake_llm(latency=0.03, fail_every={41: 400})
    server.keep_bodies = False
    rows: list[dict[str, Any]] = [{"topic": f"topic {index % 400}"} for index in range(900)]
    spec = chain_graph(server, max_concurrency=16)
    spec["nodes"]["dedup"] = {"type": "dedup", "field": "answer", "method": "exact"}
    spec["edges"].append(["answer", "dedup"])
    spec["run"] = {"max_failure_rate": 1.0, "drain_seconds": 0.5}
    graph = write_graph(spec, rows)
    out = tmp_path / "out"
    rng = random.Random(7)
    stops = ["kill"] * 10 + ["ctrl-c"] * 2
    rng.shuffle(stops)
    for index, how in enumerate(stops):
        extra = ("--resume",) if index else ()
        before = journal_headers(out)
        process = start(*run_args(graph, out, *extra))
        deadline = time.monotonic() + 120  # the part has begun once it journals its header
        while journal_headers(out) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert journal_headers(out) == before + 1, (index, process.poll())
        time.sleep(rng.uniform(0.1, 1.2))
        if how == "kill":
            process.send_signal(signal.SIGKILL)
        else:
            process.send_signal(signal.SIGINT)
            time.sleep(0.05)
            process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    done = cli(*run_args(graph, out, "--resume", "--no-retry-failed"), timeout=300)
    assert done.returncode in (0, 1), done.stderr
    sft, raw = record_ids(out, "sft"), record_ids(out, "raw")
    assert sft == raw
    in_one_place = places(out, ["sft"])
    assert len(in_one_place) == 900 and max(in_one_place.values()) == 1, in_one_place.most_common(3)
    answers = Counter(row["messages"][-1]["content"] for row in lines(out / "sft.jsonl"))
    assert max(answers.values()) == 1 and len(record_ids(out, "dropped")) > 0  # dedup held across kills
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["written"] + counts["dropped"] + counts["failed"] == 900
    assert counts["written"] == counts["outputs"]["sft"] == len(sft)
    assert journal_headers(out) == len(stops) + 1  # every stop hit a running part, then the last part

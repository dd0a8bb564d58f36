"""Batch models (`models.<name>.batch`) against a fixture that speaks the OpenAI Batch API: plain runs, mixed
graphs, critic loops, exactly once across kill -9 and Ctrl-C (every submitted line counted at the server),
batches that expire or fail, per-line errors, the cache, cost and the manifest."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.conftest import model_spec
from tests.fixture_batches import FakeBatches
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import critic_loop, judge
from tests.test_exactly_once import record_ids
from tests.test_run import chain_graph, lines

TOPICS = [{"id": f"t{index:04d}", "topic": f"topic {index}"} for index in range(200)]
FAST = {"max_requests": 50, "max_wait_s": 0.2, "poll_seconds": 0.05}


@pytest.fixture
def batch_llm() -> Iterator[Callable[..., tuple[FakeOpenAI, FakeBatches]]]:
    """A fixture server with the Batch API attached; stopped after the test."""
    servers: list[FakeOpenAI] = []

    def start(complete_after: float = 0.0, fail_lines: dict[str, tuple[int, int]] | None = None,
              **options: Any) -> tuple[FakeOpenAI, FakeBatches]:
        server = FakeOpenAI(**options)
        batches = FakeBatches(server, complete_after=complete_after, fail_lines=fail_lines)
        server.start()
        servers.append(server)
        return server, batches

    yield start
    for server in servers:
        server.stop()


def batch_chain(server: FakeOpenAI, batch: dict[str, Any] | bool | None = None, **model: Any) -> dict[str, Any]:
    spec = chain_graph(server, **model)
    spec["models"]["w"]["batch"] = FAST if batch is None else batch
    return spec


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


def submissions(out: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(out / "batches.sqlite") as db:
        return [(str(row[0]), str(row[1]), int(row[2])) for row in
                db.execute("SELECT batch_id, status, lines FROM submissions ORDER BY id")]


# -- a plain run -----------------------------------------------------------------------------------------

async def test_a_batch_model_sends_every_call_through_batches_and_none_synchronously(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    out = tmp_path / "out"
    result = await synthloom.arun(write_graph(batch_chain(server), TOPICS[:120]), out, use_cache=False)
    sft = lines(result.path("sft"))
    assert len(sft) == 120
    assert server.requests == 0  # the synchronous endpoint never saw a call
    assert batches.submitted == 240 and set(batches.lines.values()) == {1}
    assert all(size <= 50 for size in batches.line_sizes) and batches.line_sizes[0] == 50  # full batches
    by_id = {row["metadata"]["id"]: row for row in sft}
    assert by_id["t0007"]["messages"][0]["content"] == "Reply to: Ask about topic 7"
    assert by_id["t0007"]["messages"][1]["content"] == "Reply to: Reply to: Ask about topic 7"
    assert [status for _, status, _ in submissions(out)] == ["completed"] * len(batches.line_sizes)
    figures = result.manifest["batches"]["w"]
    assert figures["submitted"] == len(batches.line_sizes) and figures["lines"] == 240
    assert figures["lines_per_batch"] == {"min": min(batches.line_sizes), "max": 50}


# -- exactly once across kill -9 and Ctrl-C ---------------------------------------------------------------

def start_cli(graph: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_submissions(out: Path, at_least: int, timeout: float = 60) -> None:
    """Until the run's ledger holds `at_least` batches the provider created."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sum(1 for batch_id, _, _ in submissions(out) if batch_id != "None") >= at_least:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the run did not submit {at_least} batches within {timeout}s")


@pytest.mark.slow
def test_kill_9_while_the_first_batch_is_pending_then_resume_submits_every_call_exactly_once(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The done criterion of issue 23: a 2-node graph, 200 records, kill -9 while the first batch is pending;
    --resume writes every record once and the server saw every call's line exactly once."""
    monkeypatch.setenv("SYNTHLOOM_CACHE_DIR", str(tmp_path / "cache"))
    server, batches = batch_llm()
    batches.hold()
    graph = write_graph(batch_chain(server), TOPICS)
    out = tmp_path / "out"
    process = start_cli(graph, out)
    wait_for_submissions(out, 1)
    assert batches.statuses()["in_progress"] >= 1 and not batches.statuses()["completed"]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    before = batches.submitted
    assert before >= 50
    batches.release()
    resumed = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                              "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    written = record_ids(out, "sft")
    assert len(written) == 200 and set(written.values()) == {1}
    assert batches.submitted == 400 and set(batches.lines.values()) == {1}  # 200 records x 2 nodes, once each
    assert server.requests == 0
    assert manifest(out)["counts"]["written"] == 200
    whole_run = manifest(out)["batches"]["w"]  # both parts, from the ledger
    assert whole_run["submitted"] == len(batches.line_sizes) and whole_run["lines"] == 400
    assert whole_run["by_status"] == {"completed": len(batches.line_sizes)}


@pytest.mark.slow
@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_leaves_pending_batches_running_unless_asked_to_cancel_them(
        cancel: bool, batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    batches.hold()
    spec = batch_chain(server, max_retries=0)  # one round a line: a cancelled batch must not spend it
    spec["run"] = {"drain_seconds": 0.3}
    graph = write_graph(spec, TOPICS[:60])
    out = tmp_path / "out"
    process = start_cli(graph, out, "--no-cache", *(["--cancel-batches"] if cancel else []))
    wait_for_submissions(out, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    created = [batch_id for batch_id, _, _ in submissions(out) if batch_id != "None"]
    if cancel:
        assert sorted(batches.cancelled) == sorted(created)
        assert {status for _, status, _ in submissions(out)} == {"cancelled"}
    else:
        assert batches.cancelled == [] and batches.statuses()["in_progress"] == len(created)
        assert "left running at the provider" in stderr and "--resume" in stderr
        assert sorted(manifest(out)["batches"]["w"]["left_running"]) == sorted(created)
    batches.release()
    resumed = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                              "--resume", "--no-cache"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(record_ids(out, "sft")) == 60
    # left running: every call was paid for once; cancelled: the cancelled lines were sent again, once
    assert set(batches.lines.values()) == {1} if not cancel else max(batches.lines.values()) == 2


def kill_when(process: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 60) -> None:
    """kill -9 the run the moment `ready()` holds (polled at the fixture, in this process)."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert ready(), "the run never reached the point to kill it at"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


@pytest.mark.slow
def test_a_line_retried_before_a_kill_is_retried_only_the_rest_of_its_limit_after_resume(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """max_retries 3: topic 3's line comes back 503 every time, so it is sent as attempts 0 to 3 and its
    record fails. Killed once attempt 1 is submitted, the resumed run reads attempts 0 and 1 again from
    their batches (the ledger names them) and sends only attempts 2 and 3: four lines in all, not six."""
    server, batches = batch_llm(complete_after=0.5, fail_lines={"^Ask about topic 3$": (503, 99)})
    graph = write_graph(batch_chain(server, max_retries=3), TOPICS[:10])
    out = tmp_path / "out"
    kill_when(start_cli(graph, out, "--no-cache"), lambda: any(key.endswith("-1") for key in batches.lines))
    assert sorted(key[-2:] for key in batches.lines if not key.endswith("-0")) == ["-1"]
    resumed = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                              "--resume", "--no-cache"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    retries = sorted(key[-2:] for key in batches.lines if not key.endswith("-0"))
    assert retries == ["-1", "-2", "-3"] and set(batches.lines.values()) == {1}
    assert batches.submitted == 10 + 3 + 9  # 10 questions, topic 3's 3 retries, 9 answers
    failed = lines(out / "failed.jsonl")
    assert [(row["id"], row["attempts"]) for row in failed] == [("t0003", 4)]
    assert "injected line fault" in failed[0]["message"]
    assert len(record_ids(out, "sft")) == 9


@pytest.mark.slow
def test_batches_that_ended_unanswered_before_a_kill_count_against_the_lines_rounds_after_resume(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """max_retries 1: a line may wait on 2 batches. The first batch expires unanswered and its lines go
    again in a second, which expires too; killed while that one is pending, the resumed run counts both
    from the ledger and fails the records instead of sending their lines a third time."""
    server, batches = batch_llm(complete_after=0.5)
    batches.expire_next = 2
    graph = write_graph(batch_chain(server, max_retries=1), TOPICS[:5])
    out = tmp_path / "out"
    kill_when(start_cli(graph, out, "--no-cache"), lambda: len(batches.batches) >= 2)
    assert batches.line_sizes == [5, 5]
    resumed = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q",
                              "--resume", "--no-cache"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1 and "5 of 5 records failed" in resumed.stderr, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert batches.line_sizes == [5, 5] and set(batches.lines.values()) == {2}
    assert [status for _, status, _ in submissions(out)] == ["expired", "expired"]
    failed = lines(out / "failed.jsonl")
    assert sorted(row["id"] for row in failed) == [f"t{index:04d}" for index in range(5)]
    assert all("2 batches ended without answering this call" in row["message"] for row in failed)


async def test_resume_retries_a_record_whose_batch_lines_failed_with_new_lines_not_the_failed_answers(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """Attempts count over the run, but a failed record that `--resume` takes up again is a new try, as
    it is for a synchronous model: its calls are new lines (the ledger would answer the old ones with the
    same failures), and with `--no-retry-failed` it stays failed and sends nothing."""
    from synthloom.engine.runner import RunOptions
    server, batches = batch_llm(fail_lines={"^Ask about topic 3$": (503, 4)})
    graph = write_graph(batch_chain(server, max_retries=3), TOPICS[:10])
    out = tmp_path / "out"
    first = await synthloom.arun(graph, out, use_cache=False)
    assert first.manifest["counts"]["failed"] == 1 and batches.submitted == 10 + 3 + 9
    kept = await synthloom.arun(graph, out, options=RunOptions(resume=True, retry_failed=False, use_cache=False))
    assert kept.manifest["counts"]["failed"] == 1 and batches.submitted == 22
    retried = await synthloom.arun(graph, out, options=RunOptions(resume=True, use_cache=False))
    assert retried.manifest["counts"]["written"] == 10 and lines(out / "failed.jsonl") == []
    assert batches.submitted == 22 + 2 and set(batches.lines.values()) == {1}  # its question, then its answer
    assert len(record_ids(out, "sft")) == 10


# -- graphs ---------------------------------------------------------------------------------------------

async def test_a_graph_mixing_a_batch_model_and_a_synchronous_one(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    spec = chain_graph(server)
    spec["models"]["b"] = model_spec(server, batch=FAST)
    spec["nodes"]["question"]["model"] = "b"  # question on the batch model, answer on the synchronous one
    result = await synthloom.arun(write_graph(spec, TOPICS[:80]), tmp_path / "out", use_cache=False)
    assert len(lines(result.path("sft"))) == 80
    assert batches.submitted == 80 and set(batches.lines.values()) == {1}
    assert server.requests == 80
    assert all("Ask about topic" in json.loads(raw)["body"]["messages"][-1]["content"]
               for content in batches.files.values() for raw in content.splitlines()
               if b'"custom_id"' in raw and b'"body"' in raw and b'"method"' in raw)
    assert list(result.manifest["batches"]) == ["b"]
    assert result.manifest["batches"]["b"]["submitted"] == len(batches.line_sizes)
    assert result.manifest["models"]["b"]["batch_calls"] == 80 and "batch_calls" not in result.manifest["models"]["w"]


async def test_a_critic_loop_over_batches_goes_round_by_round_with_its_schema_in_each_line(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm(script=[("Text to review", judge([4, 8])), ("Improve", "Refined."),
                                        (".", "Draft.")])
    spec = {"name": "refine", "models": {"w": model_spec(server, batch=FAST)}, **critic_loop(max_visits=3),
            "outputs": [{"name": "raw", "format": "raw"}]}
    questions = [{"question": f"Why is thing {index} so?"} for index in range(30)]
    result = await synthloom.arun(write_graph(spec, questions), tmp_path / "out", use_cache=False)
    records = lines(result.path("raw"))
    assert len(records) == 30
    for record in records:
        assert [entry["score"] for entry in record["review_history"]] == [4, 8]
        assert record["answer"] == "Refined."
    # answer, review, refine, review: four rounds, each one batch of every record's line
    assert batches.line_sizes == [30, 30, 30, 30] and set(batches.lines.values()) == {1}
    review_lines = [json.loads(raw) for content in batches.files.values() for raw in content.splitlines()
                    if b"Text to review" in raw and b'"method"' in raw]
    assert review_lines and all(line["body"]["response_format"]["type"] == "json_schema" for line in review_lines)


# -- failure modes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fate", ["expire", "fail"])
async def test_a_batch_that_expires_or_fails_sends_again_only_its_unanswered_lines(
        fate: str, batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    if fate == "expire":
        batches.expire_next, batches.answer_before_expiry = 1, 20
    else:
        batches.fail_next = 1
    out = tmp_path / "out"
    result = await synthloom.arun(write_graph(batch_chain(server), TOPICS[:50]), out, use_cache=False)
    assert len(lines(result.path("sft"))) == 50
    answered_at_first = 20 if fate == "expire" else 0
    twice = [custom_id for custom_id, times in batches.lines.items() if times == 2]
    assert len(twice) == 50 - answered_at_first and max(batches.lines.values()) == 2
    assert batches.submitted == 100 + len(twice)
    first = submissions(out)[0]
    assert first[1] == ("expired" if fate == "expire" else "failed") and first[2] == 50
    assert result.manifest["batches"]["w"]["by_status"][first[1]] == 1


async def test_per_line_errors_are_retried_or_fail_their_record_as_synchronous_faults_do(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm(fail_lines={"^Ask about topic 3$": (503, 1), "^Ask about topic 4$": (400, 99),
                                            "^Ask about topic 5$": (200, 1)})
    out = tmp_path / "out"
    result = await synthloom.arun(write_graph(batch_chain(server), TOPICS[:10]), out, use_cache=False)
    written = {row["metadata"]["id"] for row in lines(result.path("sft"))}
    assert written == {f"t{index:04d}" for index in range(10)} - {"t0004"}
    failed = lines(out / "failed.jsonl")
    assert [row["id"] for row in failed] == ["t0004"]
    assert failed[0]["node"] == "question" and failed[0]["attempts"] == 1
    assert "HTTP 400: injected line fault" in failed[0]["message"]
    # topic 3's line came back 503, topic 5's malformed: each sent again in a later batch, as attempt 1
    retried = [custom_id for custom_id in batches.lines if custom_id.endswith("-1")]
    assert len(retried) == 2 and set(batches.lines.values()) == {1}
    assert result.manifest["models"]["w"]["retries"] == 2


async def test_a_cached_call_never_enters_a_batch_and_batch_answers_are_cached(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    graph = write_graph(batch_chain(server), TOPICS[:40])
    cache = tmp_path / "cache"
    from synthloom.engine.runner import RunOptions
    first = await synthloom.arun(graph, tmp_path / "one", options=RunOptions(limit=20, cache_dir=cache))
    assert len(lines(first.path("sft"))) == 20 and batches.submitted == 40
    second = await synthloom.arun(graph, tmp_path / "two", options=RunOptions(cache_dir=cache))
    assert len(lines(second.path("sft"))) == 40
    assert batches.submitted == 80  # only the 20 new records' 2 calls each; the first 20 came from the cache
    assert set(batches.lines.values()) == {1}
    assert second.manifest["models"]["w"]["cached"] == 40


async def test_records_sharing_a_request_share_one_batch_line(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """30 records over 3 topics: 3 distinct questions, so 3 question lines and 3 answer lines, each paid once;
    every record still gets its answers. `--no-cache` asks each record's calls, as synchronously."""
    server, batches = batch_llm()
    seeds = [{"id": f"s{index:02d}", "topic": f"topic {index % 3}"} for index in range(30)]
    result = await synthloom.arun(write_graph(batch_chain(server), seeds), tmp_path / "out")
    sft = lines(result.path("sft"))
    assert len(sft) == 30 and batches.submitted == 6 and set(batches.lines.values()) == {1}
    assert result.manifest["models"]["w"]["cached"] == 54 and result.manifest["models"]["w"]["batch_calls"] == 6
    assert {row["messages"][1]["content"] for row in sft} == {
        f"Reply to: Reply to: Ask about topic {index}" for index in range(3)}
    uncached = await synthloom.arun(write_graph(batch_chain(server), seeds), tmp_path / "uncached", use_cache=False)
    assert len(lines(uncached.path("sft"))) == 30 and batches.submitted == 6 + 60  # without it, a line a record


async def test_a_structured_refusal_in_a_batch_steps_the_model_down_its_ladder_and_the_next_batch_follows(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """llama-cpp-python's server refuses json_schema with a 500 naming response_format: in a batch, every
    critic line comes back refused, the model steps down to json_object, and those lines go again."""
    server, batches = batch_llm(refuse_json_schema=True, script=[("Text to review", judge([8])), (".", "Draft.")])
    spec = {"name": "refine", "models": {"w": model_spec(server, batch=FAST)}, **critic_loop(max_visits=3),
            "outputs": [{"name": "raw", "format": "raw"}]}
    questions = [{"question": f"Why is thing {index} so?"} for index in range(10)]
    result = await synthloom.arun(write_graph(spec, questions), tmp_path / "out", use_cache=False)
    assert len(lines(result.path("raw"))) == 10
    assert result.manifest["models"]["w"]["structured"]["mode"] == "json_object"
    sent = [json.loads(raw)["body"] for content in batches.files.values() for raw in content.splitlines()
            if b"Text to review" in raw and b'"method"' in raw]
    modes = [body["response_format"]["type"] for body in sent]
    assert modes.count("json_schema") == 10 and modes.count("json_object") == 10


async def test_n_samples_of_one_prompt_are_n_lines_even_without_a_seed(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    spec = batch_chain(server)
    spec["nodes"] = {"question": {**spec["nodes"]["question"], "n": 3}}
    spec["edges"] = []
    spec["outputs"] = [{"name": "raw", "format": "raw"}]
    result = await synthloom.arun(write_graph(spec, TOPICS[:10]), tmp_path / "out", use_cache=False)
    records = lines(result.path("raw"))
    assert len(records) == 10 and all(len(record["question"]) == 3 for record in records)
    assert batches.submitted == 30 and len(batches.lines) == 30


async def test_batch_calls_are_priced_at_the_batch_share_and_shown_apart_from_synchronous_ones(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, _ = batch_llm()
    price = {"prompt": 1.0, "completion": 2.0}
    spec = chain_graph(server, price=price)
    spec["models"]["b"] = model_spec(server, batch=FAST, price={**price, "batch": 0.4})
    spec["nodes"]["question"]["model"] = "b"
    result = await synthloom.arun(write_graph(spec, TOPICS[:20]), tmp_path / "out", use_cache=False)
    models = result.manifest["models"]
    batch, sync = models["b"], models["w"]
    full_price = (batch["prompt_tokens"] * 1.0 + batch["completion_tokens"] * 2.0) / 1e6
    assert batch["batch_cost_usd"] == pytest.approx(0.4 * full_price, abs=1e-6)
    assert batch["sync_cost_usd"] == 0 and batch["batch_calls"] == 20
    assert sync["cost_usd"] == pytest.approx((sync["prompt_tokens"] + 2 * sync["completion_tokens"]) / 1e6, abs=1e-6)
    assert "batch_cost_usd" not in sync


async def test_preview_calls_a_batch_model_synchronously_and_says_so(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    server, batches = batch_llm()
    records = await synthloom.apreview(write_graph(batch_chain(server), TOPICS[:2]), n=2, use_cache=False)
    assert [record["outcome"] for record in records] == ["written", "written"]
    assert server.requests == 4 and batches.submitted == 0
    assert "calling it synchronously here (batches are for `run`)" in caplog.text


async def test_a_run_killed_between_creating_a_batch_and_writing_its_id_finds_it_instead_of_paying_twice(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], tmp_path: Path) -> None:
    """The ledger holds the input file, the provider holds a batch made from it, the ledger has no batch id:
    the next part looks the batch up by its input file and waits for it."""
    from synthloom.config.schema import BatchSettings
    from synthloom.models.batch.api import BatchAPI
    from synthloom.models.batch.collector import BatchCollector
    from synthloom.models.batch.ledger import SubmissionLedger

    server, batches = batch_llm()
    api = BatchAPI("w", server.url, {}, timeout=5, max_retries=2, retry_base_delay=0.01)
    body = {"model": server.model, "messages": [{"role": "user", "content": "Ask about topic 1"}]}
    line = {"custom_id": "call-0", "method": "POST", "url": "/v1/chat/completions", "body": body}
    file_id = await api.upload(json.dumps(line).encode() + b"\n", "killed.jsonl")
    SubmissionLedger(tmp_path).file_uploaded("w", file_id, "/v1/chat/completions", "24h", ["call-0"])
    await api.create(file_id, "/v1/chat/completions", "24h", {})  # ... and the part was killed here
    collector = BatchCollector("w", BatchSettings(**FAST), api, tmp_path, max_rounds=2)
    answer = await collector.answer("call-0", "/v1/chat/completions", body)
    await collector.close(cancel=False)
    assert answer["response"]["body"]["choices"][0]["message"]["content"] == "Reply to: Ask about topic 1"
    assert len(batches.batches) == 1 and batches.lines == {"call-0": 1}
    assert submissions(tmp_path) == [("batch_1", "completed", 1)]


# -- validate: how many rounds ----------------------------------------------------------------------------

@pytest.mark.parametrize(("batched", "said"), [
    (["w", "j"], "batch rounds: at most 8 per record"),  # answer 1 + review 4 + refine 3 (max_visits 3)
    (["w"], "batch rounds: at most 4 per record"),  # answer 1 + refine 3
    (["j"], "batch rounds: at most 4 per record"),  # the critic's model only: review 4
    ([], "batch rounds: none (no batch model; with every model batched: 8)"),
])
def test_validate_says_how_many_batch_rounds_a_graph_needs(
        batched: list[str], said: str, write_graph: Callable[..., Path]) -> None:
    server = FakeOpenAI()  # never started: validate calls no model
    spec = {"name": "refine", "models": {name: model_spec(server, **({"batch": True} if name in batched else {}))
                                         for name in ("w", "j")},
            **critic_loop(judge_model="j", max_visits=3), "outputs": [{"name": "raw", "format": "raw"}]}
    graph = write_graph(spec, [{"question": "Why?"}])
    result = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(graph)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert said in result.stdout


def test_batch_settings_are_checked_before_anything_runs(write_graph: Callable[..., Path]) -> None:
    server = FakeOpenAI()
    settings = synthloom.load(write_graph(batch_chain(server, batch=True), TOPICS[:1])).config.models["w"].batch
    assert settings is not None and (settings.max_requests, settings.max_wait_s, settings.poll_seconds,
                                     settings.completion_window) == (1000, 30.0, 30.0, "24h")
    spec = batch_chain(server, batch={"max_requests": 0})
    with pytest.raises(synthloom.ConfigError, match="max_requests"):
        synthloom.load(write_graph(spec, TOPICS[:1]))
    spec = chain_graph(server)
    spec["models"]["w"] = {"backend": "local", "batch": True}
    with pytest.raises(synthloom.ConfigError, match="batch needs backend 'openai'"):
        synthloom.load(write_graph(spec, TOPICS[:1]))


async def test_a_run_begun_synchronously_may_be_resumed_with_the_model_batched(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """`batch:` says how a model is fed, not what it writes: --resume takes the switch."""
    from synthloom.engine.runner import RunOptions
    server, batches = batch_llm()
    out = tmp_path / "out"
    await synthloom.arun(write_graph(chain_graph(server), TOPICS[:20]), out,
                         options=RunOptions(limit=8, use_cache=False))
    assert server.requests == 16 and batches.submitted == 0
    result = await synthloom.arun(write_graph(batch_chain(server), TOPICS[:20]), out,
                                  options=RunOptions(resume=True, use_cache=False))
    assert len(record_ids(out, "sft")) == 20 and set(record_ids(out, "sft").values()) == {1}
    assert server.requests == 16 and batches.submitted == 24
    assert result.manifest["counts"]["written"] == 20


@pytest.mark.slow
def test_the_progress_line_shows_pending_batches_and_the_calls_waiting_on_them(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    batches.hold()
    graph = write_graph(batch_chain(server), TOPICS[:30])
    out, log = tmp_path / "out", tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out),
                                    "--no-cache", "--progress-every", "0.2"], stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while "batches 1 pending (oldest" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "batches 1 pending (oldest" in log.read_text()
            assert "30 calls waiting" in log.read_text()
        finally:
            batches.release()
            process.wait(timeout=120)
    assert process.returncode == 0


async def test_a_reply_that_does_not_parse_is_asked_again_in_the_next_batch(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    # the first ask gets prose; the re-ask (its last user message is the parse error) the schema's example
    server, batches = batch_llm(script=[("Title for", "Sure! Here is a title: Fine")])
    spec = {"name": "titles", "models": {"w": model_spec(server, batch=FAST)},
            "nodes": {"title": {"type": "llm", "model": "w", "output": "title",
                                "messages": [{"role": "user", "content": "Title for {{ topic }}"}],
                                "output_schema": {"type": "object", "properties": {"title": {"type": "string"}},
                                                  "required": ["title"]}}},
            "outputs": [{"name": "raw", "format": "raw"}]}
    result = await synthloom.arun(write_graph(spec, TOPICS[:12]), tmp_path / "out", use_cache=False)
    records = lines(result.path("raw"))
    assert len(records) == 12 and all(record["title"] == {"title": "ok"} for record in records)
    assert all(record["metadata"]["llm_calls"] == 2 for record in records)
    assert batches.line_sizes == [12, 12]  # the first answers, then every re-ask together in the next batch


async def test_a_provider_down_longer_than_the_retries_does_not_fail_the_records_waiting_on_its_batch(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from synthloom.engine.runner import RunOptions
    server, batches = batch_llm()
    batches.outage = 12  # every poll fails for a while, each after max_retries + 1 attempts
    result = await synthloom.arun(write_graph(batch_chain(server, max_retries=1), TOPICS[:10]), tmp_path / "out",
                                  options=RunOptions(use_cache=False, retry_base_delay=0.01))
    assert len(lines(result.path("sft"))) == 10 and batches.outage == 0
    assert batches.submitted == 20 and set(batches.lines.values()) == {1}
    assert "cannot be followed for now" in caplog.text


async def test_one_record_asking_the_very_same_thing_twice_gets_the_one_answer(
        batch_llm: Callable[..., tuple[FakeOpenAI, FakeBatches]], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server, batches = batch_llm()
    spec = batch_chain(server)
    spec["nodes"]["answer"]["messages"] = spec["nodes"]["question"]["messages"]  # the same call, twice
    result = await synthloom.arun(write_graph(spec, TOPICS[:10]), tmp_path / "out", use_cache=False)
    records = lines(result.path("raw"))
    assert len(records) == 10 and all(record["question"] == record["answer"] for record in records)
    assert batches.submitted == 10


@pytest.mark.parametrize(("workflow", "rounds"), [
    ("dpo_weak_strong", 1), ("rag_synth", 1), ("sycophancy", 1), ("fables", 2), ("magpie", 3),
    ("self_instruct", 4), ("quickstart", 5), ("evol_instruct", 6), ("agentinstruct", 8), ("dialogues", 13)])
def test_the_shipped_workflows_need_the_batch_rounds_the_readme_says(workflow: str, rounds: int) -> None:
    from synthloom.graph.batch_rounds import batch_rounds
    assert batch_rounds(synthloom.load(workflow), lambda _: True) == rounds

"""Whole graphs run end to end against the fixture server: streaming, bounds, loops, failures, outputs."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom import RunOptions

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI

TOPICS = [{"topic": f"topic {index}"} for index in range(40)]


def chain_graph(server: FakeOpenAI, **model: Any) -> dict[str, Any]:
    return {
        "name": "chain",
        "models": {"w": model_spec(server, **model)},
        "nodes": {
            "question": {"type": "llm", "model": "w", "output": "question",
                         "messages": [{"role": "user", "content": "Ask about {{ topic }}"}]},
            "answer": {"type": "llm", "model": "w", "output": "answer",
                       "messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "{{ question }}"}]},
        },
        "edges": [["question", "answer"]],
        "outputs": [
            {"name": "sft", "format": "sft", "messages": [{"role": "user", "content": "{{ question }}"},
                                                          {"role": "assistant", "content": "{{ answer }}"}]},
            {"name": "raw", "format": "raw"},
        ],
    }


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_chain_writes_every_record_with_sft_shape(fake_llm: Callable[..., FakeOpenAI],
                                                       write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.005)
    result = await synthloom.arun(write_graph(chain_graph(server), TOPICS), tmp_path / "out")
    sft = lines(result.path("sft"))
    assert len(sft) == 40 and server.successes == 80
    by_id = {record["metadata"]["id"]: record for record in sft}
    assert len(by_id) == 40
    first = next(r for r in sft if r["messages"][0]["content"] == "Reply to: Ask about topic 0")
    assert first["messages"][1] == {"role": "assistant", "content": "Reply to: Reply to: Ask about topic 0"}
    assert first["metadata"]["graph"] == "chain" and len(first["metadata"]["config_hash"]) == 16
    raw = lines(result.path("raw"))
    assert {"topic", "question", "answer", "id", "metadata"} <= set(raw[0])
    spec = chain_graph(server)
    spec["outputs"] = [{"name": "raw", "format": "raw", "fields": ["question", "answer"]}]
    narrow = await synthloom.arun(write_graph(spec, TOPICS[:2]), tmp_path / "narrow")
    assert [sorted(record) for record in lines(narrow.path("raw"))] == [["answer", "metadata", "question"]] * 2
    manifest = synthloom.read_manifest(tmp_path / "out")
    assert manifest["status"] == "completed"
    assert manifest["counts"]["written"] == 40 and manifest["counts"]["outputs"] == {"sft": 40, "raw": 40}
    assert manifest["nodes"]["answer"]["llm"]["calls"] == 40
    assert manifest["models"]["w"]["prompt_tokens"] > 0
    assert manifest["models"]["w"]["latency_s"]["p50"] >= 0.005
    dataset = result.dataset("sft")
    assert dataset.num_rows == 40 and dataset.column_names == ["messages", "metadata"]


async def test_no_batch_barrier_a_slow_record_does_not_hold_the_others(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.002, delays=[("topic 0$", 1.0)])
    result = await synthloom.arun(write_graph(chain_graph(server), TOPICS[:20]), tmp_path / "out")
    ids = [record["metadata"]["id"] for record in lines(result.path("raw"))]
    topics = [record["topic"] for record in lines(result.path("raw"))]
    assert len(ids) == 20
    assert topics[-1] == "topic 0"  # everyone else went through both nodes while it waited


async def test_records_in_flight_are_bounded(fake_llm: Callable[..., FakeOpenAI],
                                            write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.02)
    graph = write_graph(chain_graph(server, max_concurrency=64), TOPICS)
    await synthloom.arun(graph, tmp_path / "out", max_in_flight=5)
    assert server.peak_in_flight <= 5
    server.reset_counts()
    await synthloom.arun(graph, tmp_path / "out2", max_in_flight=40, use_cache=False)
    assert server.peak_in_flight > 5


async def test_model_concurrency_ceiling_is_kept_and_reached(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.03)
    graph = write_graph(chain_graph(server, max_concurrency=6), TOPICS)
    result = await synthloom.arun(graph, tmp_path / "out")
    assert server.peak_in_flight == 6
    assert result.manifest["concurrency"]["w"]["peak"] == 6


async def test_conditional_loop_stops_at_max_visits(fake_llm: Callable[..., FakeOpenAI],
                                                   write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("improve", "better answer")])
    spec = chain_graph(server)
    spec["nodes"]["improve"] = {"type": "llm", "model": "w", "output": "answer",
                                "messages": [{"role": "user", "content": "improve {{ answer }}"}]}
    spec["nodes"]["count"] = {"type": "tests.plugins_for_tests:word_count"}
    spec["edges"] += [["answer", "count"],
                      {"from": "count", "to": "improve", "when": "words < 100", "max_visits": 3},
                      ["improve", "count"]]
    result = await synthloom.arun(write_graph(spec, TOPICS[:3]), tmp_path / "out")
    raw = lines(result.path("raw"))
    assert len(raw) == 3 and all(record["answer"] == "better answer" for record in raw)
    assert result.manifest["nodes"]["improve"]["steps"] == 9  # 3 records x max_visits 3
    assert result.manifest["nodes"]["count"]["steps"] == 12


async def test_parallel_branches_join_once(fake_llm: Callable[..., FakeOpenAI],
                                          write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.01)
    spec = chain_graph(server)
    spec["nodes"]["shout"] = {"type": "tests.plugins_for_tests:shouted", "suffix": "?!"}
    spec["nodes"]["count"] = {"type": "tests.plugins_for_tests:word_count"}
    spec["nodes"]["join"] = {"type": "llm", "model": "w", "output": "joined",
                             "messages": [{"role": "user", "content": "{{ shout }} {{ words }}"}]}
    spec["edges"] = [["question", "shout"], ["question", "answer"], ["answer", "count"],
                     ["shout", "join"], ["count", "join"]]
    result = await synthloom.arun(write_graph(spec, TOPICS[:4]), tmp_path / "out")
    raw = lines(result.path("raw"))
    assert len(raw) == 4
    assert all(record["shout"].endswith("?!") and record["joined"].startswith("Reply to: REPLY TO") for record in raw)
    assert result.manifest["nodes"]["join"]["steps"] == 4


async def test_failed_record_goes_to_failed_file_and_run_goes_on(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = chain_graph(server)
    spec["nodes"]["check"] = {"type": "tests.plugins_for_tests:explode"}
    spec["edges"].append(["answer", "check"])
    seeds = TOPICS[:5] + [{"topic": "boom"}]
    result = await synthloom.arun(write_graph(spec, seeds), tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert len(lines(result.path("sft"))) == 5 and len(failed) == 1
    assert failed[0]["node"] == "check" and failed[0]["error_type"] == "ValueError"
    assert failed[0]["message"] == "this topic always fails" and failed[0]["attempts"] == 1
    assert failed[0]["seed"] == {"topic": "boom"}
    assert result.manifest["counts"]["failed"] == 1
    assert result.manifest["counts"]["failure_types"] == {"check: ValueError": 1}


async def test_http_4xx_fails_at_once_with_server_message(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_status=400)
    result = await synthloom.arun(write_graph(chain_graph(server), TOPICS[:3]), tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert len(failed) == 3 and server.requests == 3
    assert "HTTP 400" in failed[0]["message"] and "injected fault 400" in failed[0]["message"]
    assert failed[0]["error_type"] == "ModelCallError" and failed[0]["node"] == "question"
    assert result.manifest["status"] == "failed"  # every record failed: never "completed"
    assert "3 of 3 records failed" in result.manifest["message"]


async def test_high_failure_rate_aborts_the_run(fake_llm: Callable[..., FakeOpenAI],
                                               write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_status=401)
    spec = chain_graph(server)
    spec["run"] = {"failure_window": 10, "max_failure_rate": 0.5}
    seeds = [{"topic": f"t{index}"} for index in range(200)]
    result = await synthloom.arun(write_graph(spec, seeds), tmp_path / "out", max_in_flight=2)
    assert result.manifest["status"] == "aborted"
    assert "100% of the last 10 records failed" in result.manifest["message"]
    assert "question: ModelCallError" in result.manifest["message"]
    assert result.manifest["counts"]["failed"] < 20


async def test_drop_is_counted_by_reason(fake_llm: Callable[..., FakeOpenAI],
                                        write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("topic [0-4]$", "short"), (".", "a much longer reply than that")])
    spec = chain_graph(server)
    spec["nodes"]["keep"] = {"type": "tests.plugins_for_tests:KeepLong", "field": "question", "min_words": 3}
    spec["edges"] = [["question", "keep"], ["keep", "answer"]]
    result = await synthloom.arun(write_graph(spec, TOPICS[:10]), tmp_path / "out")
    dropped = lines(tmp_path / "out" / "dropped.jsonl")
    assert len(dropped) == 5 and len(lines(result.path("sft"))) == 5
    assert dropped[0]["reason"] == "too short" and dropped[0]["detail"] == {"words": 1}
    assert dropped[0]["state"]["question"] == "short"  # what the filter turned away, to look at
    assert result.manifest["counts"]["drop_reasons"] == {"keep: too short": 5}


async def test_template_sandbox_blocks_escapes(fake_llm: Callable[..., FakeOpenAI],
                                              write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = chain_graph(server)
    spec["nodes"]["question"]["messages"][0]["content"] = "{{ topic.__class__.__mro__[1].__subclasses__() }}"
    result = await synthloom.arun(write_graph(spec, TOPICS[:2]), tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert len(failed) == 2 and server.requests == 0
    assert result.manifest["counts"]["written"] == 0


async def test_condition_evaluator_refuses_code(fake_llm: Callable[..., FakeOpenAI],
                                               write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = chain_graph(server)
    spec["edges"] = [{"from": "question", "to": "answer", "when": "__import__('os').system('true')"}]
    with pytest.raises(synthloom.ConfigError, match="condition reads __import__"):
        synthloom.load(write_graph(spec, TOPICS[:2]))
    spec["edges"] = [{"from": "question", "to": "answer", "when": "topic.__class__"}]
    result = await synthloom.arun(write_graph(spec, TOPICS[:2]), tmp_path / "out")
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert len(failed) == 2 and "condition" in failed[0]["message"] and result.manifest["counts"]["written"] == 0


async def test_api_key_is_sent_but_never_written(fake_llm: Callable[..., FakeOpenAI],
                                                write_graph: Callable[..., Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("FAKE_KEY", secret)
    server = fake_llm()
    result = await synthloom.arun(write_graph(chain_graph(server, api_key_env="FAKE_KEY"), TOPICS[:3]),
                                  tmp_path / "out", allow_key_hosts=["127.0.0.1"])
    assert server.headers_seen[0]["Authorization"] == f"Bearer {secret}"
    for path in (tmp_path / "out").iterdir():
        assert secret not in path.read_text(), path
    assert result.manifest["counts"]["written"] == 3


async def test_missing_api_key_env_is_a_clear_error(fake_llm: Callable[..., FakeOpenAI],
                                                   write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    with pytest.raises(synthloom.ConfigError, match="NO_SUCH_KEY is not set"):
        await synthloom.arun(write_graph(chain_graph(server, api_key_env="NO_SUCH_KEY"), TOPICS[:1]),
                             tmp_path / "out", allow_key_hosts=["127.0.0.1"])


async def test_dpo_output_from_pairs_and_from_templates(fake_llm: Callable[..., FakeOpenAI],
                                                       write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = chain_graph(server)
    spec["outputs"] = [{"name": "dpo", "format": "dpo", "prompt": [{"role": "user", "content": "{{ question }}"}],
                        "chosen_from": "answer", "rejected": [{"role": "assistant", "content": "I don't know."}],
                        "when": "len(answer) > 3", "metadata": {"length": "len(answer)"}}]
    result = await synthloom.arun(write_graph(spec, TOPICS[:3]), tmp_path / "out")
    dpo = lines(result.path("dpo"))
    assert len(dpo) == 3
    assert dpo[0]["chosen"][0]["role"] == "assistant" and dpo[0]["rejected"][0]["content"] == "I don't know."
    assert dpo[0]["prompt"][0]["role"] == "user" and isinstance(dpo[0]["metadata"]["length"], int)


async def test_rerun_into_same_dir_needs_resume_or_overwrite(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(chain_graph(server), TOPICS[:3])
    await synthloom.arun(graph, tmp_path / "out")
    with pytest.raises(synthloom.ConfigError, match="already holds a run; add resume=True"):
        await synthloom.arun(graph, tmp_path / "out")
    again = await synthloom.arun(graph, tmp_path / "out", overwrite=True)
    assert again.manifest["counts"]["written"] == 3 and len(lines(again.path("sft"))) == 3
    resumed = await synthloom.arun(graph, tmp_path / "out", resume=True)
    assert resumed.manifest["counts"]["resumed_from_journal"] == 3 and len(lines(resumed.path("sft"))) == 3


def test_sync_run_api_returns_dataset(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                                      tmp_path: Path) -> None:
    server = fake_llm()
    graph = synthloom.load(write_graph(chain_graph(server), TOPICS[:4]))
    result = synthloom.run(graph, tmp_path / "out", options=RunOptions(limit=2))
    assert result.dataset("sft").num_rows == 2
    assert [r["metadata"]["id"] for r in synthloom.read_records(tmp_path / "out", "sft")]


def test_load_dataset_of_an_unknown_output_names_the_outputs(fake_llm: Callable[..., FakeOpenAI],
                                                              write_graph: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    server = fake_llm()
    spec = {"name": "named", "models": {"default": model_spec(server)},
            "nodes": {"a": {"type": "llm", "messages": [{"role": "user", "content": "{{ q }}"}], "output": "a"}},
            "outputs": [{"name": "sft", "format": "sft", "messages": [{"role": "user", "content": "{{ q }}"}]},
                        {"name": "never", "format": "raw", "when": "q == 'none'"}]}
    synthloom.run(write_graph(spec, [{"q": "hi"}]), tmp_path / "out")
    with pytest.raises(synthloom.ConfigError, match="no output 'nonexistent' in .*; it has sft, never"):
        synthloom.load_dataset(tmp_path / "out", "nonexistent")
    with pytest.raises(synthloom.ConfigError, match="it has sft, never"):
        list(synthloom.read_records(tmp_path / "out", "nonexistent"))
    assert len(synthloom.load_dataset(tmp_path / "out", "never")) == 0   # declared, wrote nothing
    assert list(synthloom.read_records(tmp_path / "out", "failed")) == []


def test_api_errors_name_python_options_not_cli_flags(fake_llm: Callable[..., FakeOpenAI],
                                                      write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = {"name": "twice", "models": {"default": model_spec(server)},
            "nodes": {"a": {"type": "llm", "messages": [{"role": "user", "content": "{{ q }}"}], "output": "a"}}}
    graph = write_graph(spec, [{"q": "hi"}])
    synthloom.run(graph, tmp_path / "out")
    with pytest.raises(synthloom.ConfigError) as raised:
        synthloom.run(graph, tmp_path / "out")
    assert "resume=True" in str(raised.value) and "overwrite=True" in str(raised.value)
    assert "--resume" not in str(raised.value) and "--overwrite" not in str(raised.value)
    assert synthloom.run(graph, tmp_path / "out", overwrite=True).manifest["status"] == "completed"


def test_end_of_run_summary_is_one_line_in_a_pipe(fake_llm: Callable[..., FakeOpenAI],
                                                  write_graph: Callable[..., Path], tmp_path: Path) -> None:
    import subprocess
    import sys
    server = fake_llm()
    graph = write_graph(chain_graph(server), TOPICS[:3])
    out = tmp_path / ("a-long-output-directory-name-" * 3)
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                            "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    [summary] = [line for line in done.stdout.splitlines() if "records written" in line]
    assert summary.endswith(f"-> {out}") and "3 records written" in summary  # not wrapped at 80 columns

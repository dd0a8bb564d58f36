"""The model layer against real fixture servers: faults, retries, rate control, replicas, batching, cache,
structured output and cost."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from pydantic import BaseModel
from synthloom.config.schema import ModelConfig
from synthloom.models.base import LLMRequest
from synthloom.models.cache import ResponseCache
from synthloom.models.clients import ModelPool
from synthloom.models.limits import AdaptiveLimiter, TokenBucket

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph, lines

SEEDS = [{"id": f"r{index:03d}", "topic": f"topic {index}"} for index in range(200)]


def one_node_graph(models: dict[str, Any], **node: Any) -> dict[str, Any]:
    return {"name": "one", "models": models,
            "nodes": {"answer": {"type": "llm", "model": "w", "output": "answer",
                                 "messages": [{"role": "user", "content": "Tell me about {{ topic }}"}], **node}},
            "outputs": [{"name": "raw", "format": "raw"}]}


async def test_faulty_server_still_yields_every_record(fake_llm: Callable[..., FakeOpenAI],
                                                       write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_every={7: 500, 11: 429}, hang_every=50, retry_after=0.01)
    spec = one_node_graph({"w": model_spec(server, timeout=0.5, max_concurrency=16)})
    result = await synthloom.arun(write_graph(spec, SEEDS), tmp_path / "out", retry_base_delay=0.01)
    records = lines(result.path("raw"))
    assert len(records) == 200 and result.manifest["counts"]["failed"] == 0
    assert all(record["answer"] == f"Reply to: Tell me about {record['topic']}" for record in records)
    assert server.statuses[500] > 0 and server.statuses[429] > 0
    retries = result.manifest["models"]["w"]["retries"]
    assert retries == server.requests - 200  # every request beyond the first per record was a retry
    assert result.manifest["nodes"]["answer"]["llm"]["retries"] == retries
    assert sum(record["metadata"]["retries"] for record in records) == retries  # and on each record
    assert all(record["metadata"]["llm_calls"] == 1 for record in records)


async def test_unrecoverable_4xx_is_not_retried(fake_llm: Callable[..., FakeOpenAI],
                                                write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = one_node_graph({"w": model_spec(server, model="no-such-model")})
    result = await synthloom.arun(write_graph(spec, SEEDS[:3]), tmp_path / "out", retry_base_delay=0.01)
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert server.requests == 3 and len(failed) == 3 and result.manifest["counts"]["failed"] == 3
    assert "HTTP 404" in failed[0]["message"] and "model 'no-such-model' not found" in failed[0]["message"]
    assert failed[0]["attempts"] == 1


async def test_retries_give_up_after_max_retries(fake_llm: Callable[..., FakeOpenAI],
                                                 write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_status=503)
    spec = one_node_graph({"w": model_spec(server, max_retries=2)})
    await synthloom.arun(write_graph(spec, SEEDS[:1]), tmp_path / "out", retry_base_delay=0.001)
    (failed,) = lines(tmp_path / "out" / "failed.jsonl")
    assert server.requests == 3 and failed["attempts"] == 3 and "HTTP 503" in failed["message"]


async def test_overload_cuts_concurrency_and_it_recovers(fake_llm: Callable[..., FakeOpenAI],
                                                         write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.01, fail_every={4: 429}, retry_after=0.01)
    spec = one_node_graph({"w": model_spec(server, max_concurrency=32)})
    result = await synthloom.arun(write_graph(spec, SEEDS), tmp_path / "out", retry_base_delay=0.01)
    state = result.manifest["concurrency"]["w"]
    assert state["cuts"] >= 1 and state["ceiling"] == 32
    assert result.manifest["counts"]["written"] == 200


def test_adaptive_limiter_rules() -> None:
    limiter = AdaptiveLimiter(ceiling=16)
    before_cut = asyncio.run(limiter.acquire())
    limiter.on_overload(before_cut)
    assert limiter.limit == 12  # cut by a quarter
    limiter.on_overload(before_cut)
    assert limiter.limit == 12  # a call sent before the cut does not cut again: one cut per burst
    limiter.on_overload(asyncio.run(limiter.acquire()))
    assert limiter.limit == 9  # a call sent after the cut that still meets overload does
    for _ in range(9):
        limiter.on_success()
    assert limiter.limit == 10  # a run of successes raises it by one
    fixed = AdaptiveLimiter(ceiling=8, adaptive=False)
    fixed.on_overload(asyncio.run(fixed.acquire()))
    assert fixed.limit == 8


async def test_token_bucket_reserves_and_corrects() -> None:
    bucket = TokenBucket(per_minute=1000)
    assert await bucket.take(600) == 600
    assert bucket.tokens == pytest.approx(400, abs=1)
    bucket.refund(600 - 250)  # the call really used 250
    assert bucket.tokens == pytest.approx(750, abs=1)
    assert await TokenBucket(per_minute=1000).take(5000) == 1000  # larger than a minute's budget: clamped


async def test_a_dead_replica_slows_the_run_but_does_not_stop_it(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    servers = [fake_llm(latency=0.02) for _ in range(3)]
    spec = one_node_graph({"w": model_spec(servers[0], base_url=[s.url for s in servers], max_concurrency=12,
                                           timeout=1)})
    graph = write_graph(spec, SEEDS)
    killer = threading.Timer(0.1, servers[1].stop)
    killer.start()
    result = await synthloom.arun(graph, tmp_path / "out", retry_base_delay=0.01)
    killer.join()
    assert result.manifest["counts"]["written"] == 200 and result.manifest["counts"]["failed"] == 0
    replicas = {entry["url"]: entry for entry in result.manifest["concurrency"]["w"]["replicas"]}
    assert replicas[servers[1].url]["served"] < replicas[servers[0].url]["served"]
    assert servers[0].successes + servers[2].successes + servers[1].successes == 200


async def test_micro_batching_coalesces_completion_prompts(fake_llm: Callable[..., FakeOpenAI],
                                                           write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.01)
    spec = one_node_graph({"w": model_spec(server, endpoint="completions", batch_size=8, batch_wait_ms=20,
                                           max_concurrency=4)},
                          messages=None, prompt="Topic: {{ topic }}\nQuestion:")
    result = await synthloom.arun(write_graph(spec, SEEDS[:64]), tmp_path / "out")
    records = lines(result.path("raw"))
    assert len(records) == 64
    assert all(record["answer"] == f"Reply to: Topic: {record['topic']}\nQuestion:" for record in records)
    batch_sizes = [len(body["prompt"]) for body in server.bodies]
    assert max(batch_sizes) == 8 and server.requests < 64 / 2
    assert result.manifest["models"]["w"]["calls"] == 64


async def test_cache_replays_a_finished_graph_with_zero_requests(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    graph = write_graph(chain_graph(server), SEEDS[:20])
    first = await synthloom.arun(graph, tmp_path / "one")
    assert server.requests == 40
    server.reset_counts()
    faster = synthloom.load(graph, ["models.w.max_concurrency=3", "run.max_in_flight=5"])  # speed knobs only
    second = await synthloom.arun(faster, tmp_path / "two")
    assert server.requests == 0
    assert second.manifest["models"]["w"]["cached"] == 40

    def strip(rows: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps({k: v for k, v in r.items() if k != "metadata"}) for r in rows)

    assert strip(lines(first.path("sft"))) == strip(lines(second.path("sft")))
    await synthloom.arun(graph, tmp_path / "three", use_cache=False)
    assert server.requests == 40
    server.reset_counts()
    changed = synthloom.load(graph, ["models.w.params.temperature=0.2"])  # what determines the answer
    await synthloom.arun(changed, tmp_path / "four")
    assert server.requests == 40


async def test_records_sharing_a_prompt_ask_it_once(fake_llm: Callable[..., FakeOpenAI],
                                                    write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Identical requests get one answer however the records overlap: a record whose request is being asked
    right now waits for that call, as it would find its answer in the cache a moment later."""
    server = fake_llm(hold=["same topic"])
    seeds = [{"id": f"s{index}", "topic": "same topic"} for index in range(6)]
    run = asyncio.create_task(synthloom.arun(write_graph(one_node_graph({"w": model_spec(server)}), seeds),
                                             tmp_path / "out"))
    while server.held == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # every record has reached the call by now
    server.release()
    result = await run
    assert server.requests == 1 and result.manifest["counts"]["written"] == 6
    assert result.manifest["models"]["w"]["cached"] == 5
    assert len({record["answer"] for record in result.records("raw")}) == 1


async def test_records_sharing_a_failed_call_share_its_failure(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_status=503, latency=0.5)
    seeds = [{"id": f"s{index}", "topic": "same topic"} for index in range(4)]
    spec = one_node_graph({"w": model_spec(server, max_retries=1)})
    result = await synthloom.arun(write_graph(spec, seeds), tmp_path / "out", retry_base_delay=0.01)
    failed = lines(tmp_path / "out" / "failed.jsonl")
    assert server.requests == 2 and result.manifest["counts"]["failed"] == 4
    assert sorted(row["id"] for row in failed) == ["s0", "s1", "s2", "s3"]
    assert all("HTTP 503" in row["message"] and row["attempts"] == 2 for row in failed)


async def test_a_cancelled_call_hands_its_request_to_the_next_waiter(fake_llm: Callable[..., FakeOpenAI],
                                                                     tmp_path: Path) -> None:
    """A record cancelled mid-call (its timeout, a stop) must not leave the records waiting on its call hung."""
    server = fake_llm(hold=["shared"])
    pool = ModelPool({"w": ModelConfig(**model_spec(server))}, cache=ResponseCache(tmp_path / "cache"))
    request = LLMRequest(messages=({"role": "user", "content": "shared"},))
    first = asyncio.create_task(pool.complete("w", request))
    while server.held == 0:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(pool.complete("w", request))
    await asyncio.sleep(0.1)
    first.cancel()
    while server.held < 2:  # the waiter asked in its place
        await asyncio.sleep(0.01)
    server.release()
    completion = await asyncio.wait_for(second, 10)
    assert completion.text and not completion.cached and server.requests == 2
    await pool.close()


async def test_structured_output_retries_with_the_error_shown(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    def judge(body: dict[str, Any]) -> str:
        shown_error = any("not usable" in str(m.get("content")) for m in body["messages"])
        return json.dumps({"score": 9, "feedback": "fine"}) if shown_error else "Sure! {score: nine"

    server = fake_llm(script=[(".", judge)])
    spec = one_node_graph({"w": model_spec(server)}, output="review",
                          messages=[{"role": "user", "content": "Rate {{ topic }}"}],
                          output_schema={"type": "object", "required": ["score", "feedback"],
                                         "properties": {"score": {"type": "integer"}, "feedback": {"type": "string"}}})
    spec["edges"] = [{"from": "answer", "to": "answer", "when": "review.score < 5", "max_visits": 1}]
    result = await synthloom.arun(write_graph(spec, SEEDS[:4]), tmp_path / "out")
    records = lines(result.path("raw"))
    assert [record["review"] for record in records] == [{"score": 9, "feedback": "fine"}] * 4
    assert server.requests == 8
    first = server.bodies[0]
    assert first["response_format"]["type"] == "json_schema"
    assert first["response_format"]["json_schema"]["schema"]["required"] == ["score", "feedback"]


async def test_structured_output_fields_map_into_state(fake_llm: Callable[..., FakeOpenAI],
                                                       write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", {"difficulty": "hard", "category": "science"})])
    spec = one_node_graph({"w": model_spec(server)}, output=None,
                          output_schema="tests.test_models:Tags")
    spec["outputs"] = [{"name": "sft", "format": "sft", "when": "difficulty == 'hard'",
                        "messages": [{"role": "user", "content": "{{ topic }} ({{ category }})"}]}]
    result = await synthloom.arun(write_graph(spec, SEEDS[:2]), tmp_path / "out")
    assert [r["messages"][0]["content"] for r in lines(result.path("sft"))] == [
        "topic 0 (science)", "topic 1 (science)"]


async def test_cost_and_latency_are_reported(fake_llm: Callable[..., FakeOpenAI],
                                             write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.01)
    spec = one_node_graph({"w": model_spec(server, price={"prompt": 2.0, "completion": 10.0})})
    result = await synthloom.arun(write_graph(spec, SEEDS[:10]), tmp_path / "out")
    usage = result.manifest["models"]["w"]
    expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 10.0) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected) and usage["cost_usd"] > 0
    assert usage["latency_s"]["p50"] >= 0.01 and usage["latency_s"]["p99"] >= usage["latency_s"]["p50"]
    assert usage["prompt_tokens"] == 10 * len(["Tell", "me", "about", "topic", "0"])


class Tags(BaseModel):
    """A pydantic model used as output_schema by path."""

    difficulty: str
    category: str

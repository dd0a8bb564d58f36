"""Faults a real server makes, classified right: what is retried, what cuts concurrency, what is redacted."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import synthloom
from synthloom.config.schema import ModelConfig
from synthloom.models.base import LLMRequest
from synthloom.models.limits import AdaptiveLimiter, Slots
from synthloom.models.openai_http import OpenAIClient

from tests.conftest import model_spec
from tests.fixture_server import MALFORMED, FakeOpenAI
from tests.test_models import SEEDS, one_node_graph
from tests.test_run import lines


async def test_a_200_that_is_not_json_is_retried(fake_llm: Callable[..., FakeOpenAI],
                                                 write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(raw_every={5: "<html><body>502 Bad Gateway</body></html>",
                                 7: '{"choices": [{"message": {"content": "cut sh', 11: '{"id": "no choices"}'})
    spec = one_node_graph({"w": model_spec(server)})
    result = await synthloom.arun(write_graph(spec, SEEDS[:40]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 40 and result.manifest["counts"]["failed"] == 0
    assert server.statuses[-200] > 0
    assert result.manifest["concurrency"]["w"]["cuts"] == 0  # a broken body is not overload


@pytest.mark.parametrize("status", [520, 521, 522, 523, 524, 529])
async def test_cloudflare_style_5xx_are_retried(status: int, fake_llm: Callable[..., FakeOpenAI],
                                                write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_every={2: status})
    spec = one_node_graph({"w": model_spec(server)})
    result = await synthloom.arun(write_graph(spec, SEEDS[:10]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 10 and server.statuses[status] > 0


async def test_a_server_that_is_down_does_not_cut_concurrency(write_graph: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = one_node_graph({"w": {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m",
                                 "max_concurrency": 8, "max_retries": 2}})
    result = await synthloom.arun(write_graph(spec, SEEDS[:6]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["failed"] == 6
    assert result.manifest["concurrency"]["w"]["cuts"] == 0 and result.manifest["concurrency"]["w"]["limit"] == 8
    assert "cannot reach" in lines(tmp_path / "out" / "failed.jsonl")[0]["message"]


async def test_an_echoed_api_key_never_reaches_a_file(fake_llm: Callable[..., FakeOpenAI],
                                                      write_graph: Callable[..., Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-do-not-write-7f3a9c"
    monkeypatch.setenv("FAULT_TEST_KEY", secret)
    server = fake_llm(fail_status=401, echo_auth=True)
    spec = one_node_graph({"w": model_spec(server, api_key_env="FAULT_TEST_KEY")})
    out = tmp_path / "out"
    await synthloom.arun(write_graph(spec, SEEDS[:3]), out, allow_key_hosts=["127.0.0.1"])
    failed = lines(out / "failed.jsonl")
    assert len(failed) == 3 and "Authorization: Bearer ***" in failed[0]["message"]
    for path in out.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


async def test_failed_calls_give_their_tokens_back(fake_llm: Callable[..., FakeOpenAI]) -> None:
    """A call that fails (or is cancelled) used no tokens: its TPM reservation must come back."""
    server = fake_llm(fail_status=400)
    config = ModelConfig(backend="openai", base_url=server.url, model=server.model, tpm=1000)
    client = OpenAIClient("w", config, retry_base_delay=0.001)
    request = LLMRequest(messages=({"role": "user", "content": "hello"},), params={"max_tokens": 100})
    try:
        for _ in range(30):  # 30 x ~100 reserved tokens: three times the minute's budget
            with pytest.raises(synthloom.ModelCallError):
                await asyncio.wait_for(client.complete(request), 5)
        assert client.tpm is not None and client.tpm.tokens > 900
    finally:
        await client.close()


async def test_a_waiter_cancelled_while_a_slot_frees_leaves_the_limiter_sound() -> None:
    """Ctrl-C cancels records waiting for a model slot; `release` may pass over the cancelled waiter first."""
    limiter = AdaptiveLimiter(ceiling=1)
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    limiter.release()  # runs before the cancelled task resumes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.in_use == 0
    await asyncio.wait_for(limiter.acquire(), 1)  # the slot is still there for the next caller
    assert limiter.in_use == 1


async def test_a_lease_that_shrinks_and_grows_while_calls_wait_admits_exactly_the_lease() -> None:
    """A `run --ray` shard's gate is the limiter's `Slots` resized to its lease as the bank rebalances:
    a lease of 0 admits nobody, a shrunk lease lets the calls in flight finish and admits no one new until
    it has room, and waiters are admitted first come first served."""
    gate = Slots(0)
    order: list[int] = []

    async def call(number: int) -> None:
        await gate.take()
        order.append(number)

    waiting = [asyncio.create_task(call(number)) for number in range(4)]
    await asyncio.sleep(0.01)
    assert order == [] and gate.in_use == 0
    gate.resize(2)
    await asyncio.sleep(0.01)
    assert order == [0, 1] and gate.in_use == 2
    gate.resize(1)  # shrunk below what is in flight: the next release frees no room
    gate.release()
    await asyncio.sleep(0.01)
    assert order == [0, 1] and gate.in_use == 1
    gate.release()
    await asyncio.sleep(0.01)
    assert order == [0, 1, 2] and gate.in_use == 1 and gate.peak == 2
    waiting[3].cancel()
    gate.resize(5)
    await asyncio.gather(*waiting, return_exceptions=True)
    assert order == [0, 1, 2] and gate.in_use == 1


@pytest.mark.parametrize("mode", sorted(MALFORMED))
async def test_a_reply_of_the_wrong_shape_is_retried(mode: str, fake_llm: Callable[..., FakeOpenAI],
                                                    write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Every third reply is well-formed JSON of the wrong shape: retried like a body that is not JSON, so
    every record is written, and none with an empty or made-up answer."""
    server = fake_llm(malformed_every={3: mode})
    spec = one_node_graph({"w": model_spec(server)})
    spec["outputs"] = [{"name": "sft", "format": "sft", "messages": [
        {"role": "user", "content": "{{ topic }}"}, {"role": "assistant", "content": "{{ answer }}"}]}]
    result = await synthloom.arun(write_graph(spec, SEEDS[:12]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 12 and result.manifest["counts"]["failed"] == 0
    assert server.statuses[-200] >= 4
    for record in lines(tmp_path / "out" / "sft.jsonl"):
        assert record["messages"][1]["content"].startswith("Reply to: Tell me about topic")


@pytest.mark.parametrize("mode", ["content_null", "choice_a_number", "content_a_dict", "usage_a_string"])
async def test_a_server_that_only_gives_wrong_shapes_fails_records_in_one_line(
        mode: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(malformed_every={1: mode})
    spec = one_node_graph({"w": model_spec(server, max_retries=2)})
    result = await synthloom.arun(write_graph(spec, SEEDS[:3]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["failed"] == 3 and not lines(tmp_path / "out" / "raw.jsonl")
    for failure in lines(tmp_path / "out" / "failed.jsonl"):
        assert failure["attempts"] == 3 and "traceback" not in failure, failure
        assert failure["error_type"] == "ModelCallError" and "malformed reply" in failure["message"]
        assert "\n" not in failure["message"] and len(failure["message"]) < 500


@pytest.mark.parametrize("reply", ["", "  \n"])
async def test_an_empty_answer_never_becomes_an_empty_sft_turn(reply: str, fake_llm: Callable[..., FakeOpenAI],
                                                             write_graph: Callable[..., Path],
                                                             tmp_path: Path) -> None:
    """A well-formed but empty reply is a reply; the SFT record it would make is not training data."""
    server = fake_llm(script=[("topic 1$", reply)])
    spec = one_node_graph({"w": model_spec(server)})
    spec["outputs"] = [{"name": "sft", "format": "sft", "messages": [
        {"role": "user", "content": "{{ topic }}"}, {"role": "assistant", "content": "{{ answer }}"}]}]
    result = await synthloom.arun(write_graph(spec, SEEDS[:3]), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 2 and result.manifest["counts"]["failed"] == 1
    [failure] = lines(tmp_path / "out" / "failed.jsonl")
    assert failure["id"] == "r001" and failure["node"] == "outputs" and "empty" in failure["message"]
    assert all(record["messages"][1]["content"].strip() for record in lines(tmp_path / "out" / "sft.jsonl"))

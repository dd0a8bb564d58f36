"""The real embedded model (SmolLM2-135M through llama-cpp-python): a few short calls, no server."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="needs the 'local' extra")

from synthloom.config.schema import ModelConfig
from synthloom.errors import ModelCallError
from synthloom.graph.output_schema import OutputSchema
from synthloom.models.base import Completion, LLMRequest
from synthloom.models.llama.client import LocalClient, default_gguf_path

pytestmark = pytest.mark.embedded
ROOT = Path(__file__).resolve().parent.parent


def test_embedded_model_honours_a_json_schema() -> None:
    schema = OutputSchema({"type": "object", "properties": {
        "score": {"type": "integer", "enum": list(range(1, 11))},
        "verdict": {"type": "string", "enum": ["good", "bad"]}}, "required": ["score", "verdict"]})
    client = LocalClient("default", ModelConfig(backend="local"))
    request = LLMRequest(messages=({"role": "user", "content": "Rate 'The sky is blue.' as JSON."},),
                         params={"max_tokens": 40, "temperature": 0}, json_schema=schema.schema)
    completion = asyncio.run(complete_all(client, [request]))[0]
    parsed = schema.parse(completion.text)
    assert 1 <= parsed["score"] <= 10 and parsed["verdict"] in ("good", "bad")
    assert completion.completion_tokens > 0


QUICKSTART_TIMEOUT_S = 900


@pytest.mark.timeout(QUICKSTART_TIMEOUT_S + 60)  # the subprocess's own limit decides, not pytest's 300 s
def test_quickstart_runs_on_the_embedded_model(tmp_path: Path) -> None:
    """Every seed record lands somewhere; what is written passes the quickstart's hygiene (a question that
    ends with ?, an answer that was not cut off), and what is not is counted by its reason."""
    out = tmp_path / "qs"
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(ROOT / "graphs" / "quickstart.yaml"),
                           "-o", str(out), "-n", "3", "-q", "--set", "models.default.params.max_tokens=64"],
                          capture_output=True, text=True, timeout=QUICKSTART_TIMEOUT_S,
                          env={**os.environ, "SYNTHLOOM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["written"] + counts["failed"] + counts["dropped"] == 3
    assert sum(counts["drop_reasons"].values()) == counts["dropped"]
    records = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()] \
        if (out / "sft.jsonl").exists() else []
    for record in records:
        user, assistant = record["messages"]
        assert user["role"] == "user" and user["content"].rstrip().endswith("?")
        assert assistant["role"] == "assistant" and assistant["content"].rstrip()[-1] in ".!?\"')"
        assert 1 <= record["metadata"]["score"] <= 10
    assert (out / "README.md").read_text().startswith("---\n")
    assert manifest["models"]["default"]["completion_tokens"] > 0
    decoded = manifest["concurrency"]["default"]  # sequences decoded together, not {}
    assert decoded["slots"] == 8 and 1 <= decoded["peak"] <= 8 and decoded["steps"] > 0
    assert decoded["threads"] == 1  # SYNTHLOOM_THREADS reached the engine
    assert manifest["max_in_flight"] == 16  # twice the sequences decoded together: one ready as a slot frees


# -- batched decoding: every request in a batch gets what it would get alone ------------------------------

SCORE_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"},
                                                 "verdict": {"type": "string", "enum": ["good", "bad"]}},
                "required": ["score", "verdict"]}


@pytest.fixture(scope="module")
def direct_llama() -> Iterator[Any]:
    """llama-cpp-python used directly, the way the embedded backend used it before batching."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(default_gguf_path()), n_ctx=2048, verbose=False, seed=0)
    yield llama
    llama.close()


def direct(llama: Any, request: LLMRequest) -> tuple[str, str, int, int]:
    """The same request through create_chat_completion / create_completion, with the client's defaults
    (repeat_penalty 1.1, seed + sample index); a fresh evaluation each time (no prefix reuse)."""
    params = {"repeat_penalty": 1.1, **request.params}
    params["seed"] = params.get("seed", 0) + request.sample
    llama.reset()
    if request.prompt is not None:
        out = llama.create_completion(prompt=request.prompt, **params)
        text = out["choices"][0]["text"]
    else:
        extra = {"response_format": {"type": "json_object", "schema": request.json_schema}} \
            if request.json_schema is not None else {}
        out = llama.create_chat_completion(messages=list(request.messages or ()), **params, **extra)
        text = out["choices"][0]["message"]["content"]
    return text, out["choices"][0]["finish_reason"], out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]


def outcome(completion: Completion) -> tuple[str, str, int, int]:
    return (completion.text, completion.finish_reason or "", completion.prompt_tokens,
            completion.completion_tokens)


def chat(text: str, **params: Any) -> LLMRequest:
    return LLMRequest(messages=({"role": "user", "content": text},), params=params)


async def complete_all(client: LocalClient, requests: list[LLMRequest]) -> list[Completion]:
    try:
        return list(await asyncio.gather(*(client.complete(request) for request in requests)))
    finally:
        await client.close()


def test_batched_greedy_equals_sequential_greedy(direct_llama: Any) -> None:
    requests = [chat(f"Write one sentence about a {thing}.", max_tokens=24, temperature=0)
                for thing in ("cat", "ship", "tree", "robot")]
    client = LocalClient("default", ModelConfig(backend="local"))
    completions = asyncio.run(complete_all(client, requests))
    assert [outcome(c) for c in completions] == [direct(direct_llama, r) for r in requests]
    stats = client.decoded_batches() or {}
    assert stats["peak"] >= 2 and stats["prompts"] == 4  # they really were decoded together


def test_eight_in_flight_each_sampling_path_gives_what_it_gives_alone(direct_llama: Any) -> None:
    """Eight requests decoded together, one for each way a token is chosen from the shared logits (greedy by
    argmax, top-k candidates handed to llama.cpp's chain, the whole chain on the full row: top_k 0, a grammar),
    with repeat, frequency and presence penalties applied in place, and a stop string: each gets exactly
    what create_chat_completion gives it alone."""
    requests = [
        chat("Write one sentence about a cat.", max_tokens=24, temperature=0),
        chat("Write one sentence about a ship.", max_tokens=24, temperature=0, repeat_penalty=1.3,
             frequency_penalty=0.5, presence_penalty=0.25),
        chat("Tell me about Rome.", max_tokens=24, temperature=0.8, top_k=40, seed=11),
        chat("Tell me about Rome.", max_tokens=24, temperature=0.8, top_k=40, seed=12, frequency_penalty=0.3),
        chat("Tell me about Oslo.", max_tokens=24, temperature=0.7, top_k=0, top_p=0.9, seed=3),
        chat("List three fruits, one per line.", max_tokens=40, temperature=0, stop=["\n"]),
        LLMRequest(messages=({"role": "user", "content": "Rate 'The sky is blue.' as JSON."},),
                   params={"max_tokens": 30, "temperature": 0}, json_schema=SCORE_SCHEMA),
        chat("Write a long story about a dragon.", max_tokens=20, temperature=0),
    ]
    client = LocalClient("default", ModelConfig(backend="local"))
    completions = asyncio.run(complete_all(client, requests))
    assert [outcome(c) for c in completions] == [direct(direct_llama, r) for r in requests]
    assert (client.decoded_batches() or {})["peak"] == 8  # all eight really were decoded together
    assert completions[2].text != completions[3].text and completions[5].finish_reason == "stop"


def test_the_threads_setting_reaches_llama_cpp() -> None:
    import llama_cpp

    async def scenario() -> tuple[int, int, dict[str, Any]]:
        client = LocalClient("default", ModelConfig(backend="local", threads=1))
        try:
            await client.complete(chat("Say hi.", max_tokens=2, temperature=0))
            engine: Any = client._engine
            context = engine.context.ctx
            return (llama_cpp.llama_n_threads(context), llama_cpp.llama_n_threads_batch(context),
                    client.decoded_batches() or {})
        finally:
            await client.close()

    threads, threads_batch, decoded = asyncio.run(scenario())
    assert threads == threads_batch == 1 and decoded["threads"] == 1


def test_each_request_in_a_batch_keeps_its_own_parameters(direct_llama: Any) -> None:
    requests = [
        chat("List three fruits, one per line.", max_tokens=40, temperature=0, stop=["\n"]),
        chat("Tell me about Paris.", max_tokens=30, temperature=0.9, top_k=20, top_p=0.9, min_p=0.1, seed=5),
        LLMRequest(messages=({"role": "user", "content": "Tell me about Paris."},), sample=1,
                   params={"max_tokens": 30, "temperature": 0.9, "top_k": 20, "top_p": 0.9, "min_p": 0.1, "seed": 5}),
        chat("Write a long story about a dragon.", max_tokens=7, temperature=0, repeat_penalty=1.0),
        LLMRequest(prompt="<|im_start|>user\n", params={"max_tokens": 16, "temperature": 0}),
    ]
    completions = asyncio.run(complete_all(LocalClient("default", ModelConfig(backend="local")), requests))
    assert [outcome(c) for c in completions] == [direct(direct_llama, r) for r in requests]
    fruits, paris, paris_again, dragon, raw = completions
    assert "\n" not in fruits.text and fruits.finish_reason == "stop"
    assert paris.text != paris_again.text  # another sample index, another seed
    assert dragon.completion_tokens == 7 and dragon.finish_reason == "length"
    assert raw.completion_tokens > 0


def test_a_schema_request_among_plain_ones(direct_llama: Any) -> None:
    schema = OutputSchema(SCORE_SCHEMA)
    rate = LLMRequest(messages=({"role": "user", "content": "Rate 'The sky is blue.' as JSON."},),
                      params={"max_tokens": 40, "temperature": 0}, json_schema=schema.schema)
    requests = [chat("Name a colour.", max_tokens=16, temperature=0), rate,
                chat("Name an animal.", max_tokens=16, temperature=0)]
    completions = asyncio.run(complete_all(LocalClient("default", ModelConfig(backend="local")), requests))
    assert [outcome(c) for c in completions] == [direct(direct_llama, r) for r in requests]
    parsed = schema.parse(completions[1].text)
    assert parsed["verdict"] in ("good", "bad")
    assert not completions[0].text.lstrip().startswith("{")


def test_a_cancelled_request_frees_its_sequence_and_spares_the_others(direct_llama: Any) -> None:
    """Two slots: A and B run, A is cancelled (as Ctrl-C cancels a record's task); C then gets A's slot
    and finishes while B is still decoding, and B's text is what it would have been alone."""
    long_a = chat("Write a long story about a dragon.", max_tokens=120, temperature=0)
    long_b = chat("Write a long essay about the history of Rome.", max_tokens=120, temperature=0)
    short_c = chat("Name a colour.", max_tokens=4, temperature=0)

    async def scenario() -> tuple[Completion, Completion, bool, dict[str, Any]]:
        client = LocalClient("default", ModelConfig(backend="local", max_concurrency=2))
        try:
            task_a = asyncio.ensure_future(client.complete(long_a))
            task_b = asyncio.ensure_future(client.complete(long_b))
            while (client.decoded_batches() or {}).get("steps", 0) < 3:
                await asyncio.sleep(0.01)
            task_a.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task_a
            c = await client.complete(short_c)
            b_still_running = not task_b.done()
            return await task_b, c, b_still_running, client.decoded_batches() or {}
        finally:
            await client.close()

    b, c, b_still_running, stats = asyncio.run(scenario())
    assert b_still_running  # C did not wait for B: A's slot was free
    assert outcome(b) == direct(direct_llama, long_b)
    assert outcome(c) == direct(direct_llama, short_c)
    assert stats["slots"] == 2 and stats["peak"] == 2
    assert stats["prompts_beside_tokens"] >= 1  # C's prompt went into one of B's steps, and B's text is unchanged


def test_closing_the_client_stops_its_thread_and_fails_what_is_running() -> None:
    async def scenario() -> tuple[BaseException | None, bool, bool]:
        client = LocalClient("default", ModelConfig(backend="local"))
        running = asyncio.ensure_future(client.complete(chat("Write a long story about a dragon.", max_tokens=200)))
        while (client.decoded_batches() or {}).get("steps", 0) < 2:
            await asyncio.sleep(0.01)
        threads = [thread for thread in threading.enumerate() if thread.name.startswith("llama:")]
        await client.close()
        error = (await asyncio.gather(running, return_exceptions=True))[0]
        return (error if isinstance(error, BaseException) else None, len(threads) == 1,
                any(thread.is_alive() for thread in threads))

    error, had_one_thread, still_alive = asyncio.run(scenario())
    assert had_one_thread and not still_alive
    assert isinstance(error, ModelCallError) and "closed" in str(error)
    again = LocalClient("default", ModelConfig(backend="local"))  # a new client loads the model again
    completion = asyncio.run(complete_all(again, [chat("Say hi.", max_tokens=4, temperature=0)]))[0]
    assert completion.completion_tokens > 0


# -- the version gate: the batched engine on tested llama-cpp-python versions, the public API elsewhere --------

def test_a_tested_llama_cpp_version_gets_the_batched_engine(caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from synthloom.models.llama.gate import API_ENV_VAR, TESTED_VERSIONS, installed_version

    monkeypatch.delenv(API_ENV_VAR, raising=False)
    assert installed_version() in TESTED_VERSIONS  # CI installs what pyproject pins
    client = LocalClient("default", ModelConfig(backend="local"))
    with caplog.at_level("INFO", logger="synthloom.models"):
        completions = asyncio.run(complete_all(client, [chat("Say hi.", max_tokens=4, temperature=0)] * 2))
    assert all(c.completion_tokens > 0 for c in completions)
    assert (client.decoded_batches() or {})["api"] == "batched"
    lines = [r.getMessage() for r in caplog.records if "embedded model" in r.getMessage()]
    assert len(lines) == 1 and "batched engine" in lines[0] and f"{installed_version()} is a tested version" in lines[0]


def test_the_public_api_path_gives_what_create_chat_completion_gives(
        direct_llama: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced by the environment (as an untested llama-cpp-python version would choose it): every request,
    decoded one at a time through the public API, keeps its sampling parameters, seed, stop and grammar."""
    from synthloom.models.llama.gate import API_ENV_VAR

    monkeypatch.setenv(API_ENV_VAR, "public")
    requests = [
        chat("Write one sentence about a cat.", max_tokens=12, temperature=0),
        chat("Tell me about Rome.", max_tokens=12, temperature=0.8, top_k=40, seed=11, frequency_penalty=0.3),
        chat("List three fruits, one per line.", max_tokens=20, temperature=0, stop=["\n"]),
        LLMRequest(messages=({"role": "user", "content": "Rate 'The sky is blue.' as JSON."},),
                   params={"max_tokens": 30, "temperature": 0}, json_schema=SCORE_SCHEMA),
        LLMRequest(prompt="<|im_start|>user\n", params={"max_tokens": 8, "temperature": 0}),
    ]
    client = LocalClient("default", ModelConfig(backend="local", threads=1))
    with caplog.at_level("INFO", logger="synthloom.models"):
        completions = asyncio.run(complete_all(client, requests))
    assert [outcome(c) for c in completions] == [direct(direct_llama, r) for r in requests]
    assert completions[2].finish_reason == "stop" and json.loads(completions[3].text)["verdict"] in ("good", "bad")
    decoded = client.decoded_batches() or {}
    assert decoded["api"] == "public" and decoded["peak"] == 1 and decoded["prompts"] == len(requests)
    assert decoded["threads"] == 1
    lines = [r for r in caplog.records if "embedded model" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert "public API, one request at a time" in lines[0].getMessage()
    assert f"{API_ENV_VAR}=public" in lines[0].getMessage()

"""What a server refuses is learnt once per model: structured output steps down its ladder (json_schema ->
json_object -> structured_outputs -> guided_json -> prompt), a server that takes no prompt lists gets single
prompts, and a refusal is never retried. Exact request counts against fixture servers that refuse like real ones."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom.models.openai_http import is_retryable
from synthloom.models.structured_modes import fields_named

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI, example_for_schema
from tests.test_models import SEEDS, one_node_graph
from tests.test_run import lines

VERDICT = {"type": "object", "required": ["score", "label"],
           "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10},
                          "label": {"type": "string", "enum": ["good", "bad"]}}}
LLAMA_CPP_REFUSAL = "Input should be 'text' or 'json_object'"


def schema_graph(server: FakeOpenAI, **model: Any) -> dict[str, Any]:
    """One structured llm node; one call at a time, so every count is exact."""
    return one_node_graph({"w": model_spec(server, max_concurrency=1, **model)}, output_schema=VERDICT,
                          output=None)


def kinds(server: FakeOpenAI) -> list[str]:
    """How each request asked for structure: its response_format type, structured_outputs, guided_json, or
    the prompt."""
    found = []
    for body in server.bodies:
        if "response_format" in body:
            found.append(body["response_format"]["type"])
        else:
            found.append(next((field for field in ("structured_outputs", "guided_json") if field in body), "prompt"))
    return found


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "synthloom.models"]


async def test_auto_steps_down_to_json_object_on_a_llama_cpp_refusal(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    server = fake_llm(refuse_json_schema=True)
    result = await synthloom.arun(write_graph(schema_graph(server), SEEDS[:5]), tmp_path / "out",
                                  retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 5 and result.manifest["counts"]["failed"] == 0
    assert server.requests == 6 and server.statuses[500] == 1  # one refusal, never retried
    assert kinds(server) == ["json_schema"] + ["json_object"] * 5
    assert all(body["response_format"]["schema"] == VERDICT for body in server.bodies[1:])
    structured = result.manifest["models"]["w"]["structured"]
    assert structured["mode"] == "json_object" and structured["fell_back_from"] == ["json_schema"]
    assert LLAMA_CPP_REFUSAL in structured["reason"]
    assert all(record["score"] == 8 and record["label"] == "good" for record in lines(result.path("raw")))
    assert len(fallback_warnings(caplog)) == 1


async def test_concurrent_refusals_step_down_once(fake_llm: Callable[..., FakeOpenAI],
                                                  write_graph: Callable[..., Path], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    server = fake_llm(refuse_json_schema=True, latency=0.02)
    spec = one_node_graph({"w": model_spec(server, max_concurrency=8)}, output_schema=VERDICT, output="v")
    result = await synthloom.arun(write_graph(spec, SEEDS[:40]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 40
    refused = server.statuses[500]
    assert 1 <= refused <= 8  # only those already in flight when the first refusal came back
    assert server.requests == 40 + refused
    assert result.manifest["models"]["w"]["structured"]["fell_back_from"] == ["json_schema"]
    assert len(fallback_warnings(caplog)) == 1


async def test_auto_walks_the_whole_ladder_down_to_the_prompt(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A server that takes no structured-output field: the schema goes into the prompt and is followed."""
    server = fake_llm(prompt_only=True, script=[("matching this JSON Schema", {"score": 3, "label": "bad"})])
    result = await synthloom.arun(write_graph(schema_graph(server), SEEDS[:4]), tmp_path / "out",
                                  retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 4
    assert server.requests == 4 + 4 and server.statuses[400] == 4
    assert kinds(server) == ["json_schema", "json_object", "structured_outputs", "guided_json"] + ["prompt"] * 4
    assert json.dumps(VERDICT) not in server.bodies[1]["messages"][-1]["content"]
    assert server.bodies[2]["structured_outputs"] == {"json": VERDICT}
    for body in server.bodies[2:4]:  # structured_outputs and guided_json may be ignored: the prompt says it too
        assert json.dumps(VERDICT) in body["messages"][-1]["content"]
    last_user = server.bodies[-1]["messages"][-1]["content"]
    assert last_user.startswith("Tell me about topic ") and json.dumps(VERDICT) in last_user
    structured = result.manifest["models"]["w"]["structured"]
    assert structured == {"mode": "prompt", "fell_back_from": ["json_schema", "json_object", "structured_outputs",
                                                               "guided_json"], "reason": structured["reason"]}
    assert "guided_json" in structured["reason"]
    assert len(fallback_warnings(caplog)) == 4  # one line per step
    assert all(record["score"] == 3 for record in lines(result.path("raw")))


async def test_prompt_mode_parses_and_asks_again(fake_llm: Callable[..., FakeOpenAI],
                                                 write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """In prompt mode nothing constrains the reply: a bad one is shown to the model with the error."""
    server = fake_llm(script=[("not usable", {"score": 5, "label": "good"}), ("JSON Schema", "Sure! Here it is.")])
    result = await synthloom.arun(write_graph(schema_graph(server, structured="prompt"), SEEDS[:3]),
                                  tmp_path / "out")
    assert result.manifest["counts"]["written"] == 3 and server.requests == 6
    assert kinds(server) == ["prompt"] * 6
    retries = [body["messages"] for body in server.bodies if len(body["messages"]) > 1]
    assert len(retries) == 3 and all([message["role"] for message in retry] == ["user", "assistant", "user"]
                                     for retry in retries)
    assert all(retry[-1]["content"].count(json.dumps(VERDICT)) == 1 for retry in retries)  # shown once
    assert "structured" not in result.manifest["models"]["w"] or \
        "fell_back_from" not in result.manifest["models"]["w"]["structured"]


@pytest.mark.parametrize(("mode", "sent"), [("json_object", "json_object"),
                                            ("structured_outputs", "structured_outputs"),
                                            ("guided_json", "guided_json")])
async def test_a_chosen_mode_is_sent_from_the_first_request(
        mode: str, sent: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    server = fake_llm(refuse_json_schema=True)
    result = await synthloom.arun(write_graph(schema_graph(server, structured=mode), SEEDS[:3]), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 3 and server.requests == 3 and server.statuses[500] == 0
    assert kinds(server) == [sent] * 3
    assert result.manifest["models"]["w"]["structured"] == {"mode": mode}


async def test_a_refusal_naming_a_field_is_not_retried(fake_llm: Callable[..., FakeOpenAI],
                                                       write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """json_schema chosen on a server that refuses it: each record fails at once, with the server's words."""
    server = fake_llm(refuse_json_schema=True)
    out = tmp_path / "out"
    result = await synthloom.arun(write_graph(schema_graph(server, structured="json_schema"), SEEDS[:3]), out,
                                  retry_base_delay=0.001)
    assert result.manifest["counts"]["failed"] == 3 and server.requests == 3  # not 3 x 7
    failed = lines(out / "failed.jsonl")
    assert all(entry["attempts"] == 1 and LLAMA_CPP_REFUSAL in entry["message"] for entry in failed)


async def test_a_500_naming_no_field_is_still_retried(fake_llm: Callable[..., FakeOpenAI],
                                                      write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_every={2: 500})
    result = await synthloom.arun(write_graph(schema_graph(server), SEEDS[:4]), tmp_path / "out",
                                  retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 4 and server.statuses[500] >= 1
    assert server.requests == 4 + server.statuses[500]
    assert result.manifest["models"]["w"]["structured"] == {"mode": "json_schema"}


async def test_a_server_without_prompt_lists_gets_single_prompts(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    server = fake_llm(refuse_prompt_lists=True)
    spec = one_node_graph({"w": model_spec(server, endpoint="completions", batch_size=4, batch_wait_ms=300,
                                           max_concurrency=4)},
                          messages=None, prompt="Topic: {{ topic }}\nQuestion:")
    spec["run"] = {"max_in_flight": 4}  # the first four records fill exactly one batch
    result = await synthloom.arun(write_graph(spec, SEEDS[:12]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 12 and result.manifest["counts"]["failed"] == 0
    assert server.requests == 1 + 12 and server.statuses[500] == 1  # one refused list, then one prompt each
    assert [type(body["prompt"]).__name__ for body in server.bodies] == ["list"] + ["str"] * 12
    assert all(record["answer"] == f"Reply to: Topic: {record['topic']}\nQuestion:"
               for record in lines(result.path("raw")))
    batching = result.manifest["models"]["w"]["batching"]
    assert batching["batch_size"] == 1 and batching["configured"] == 4 and "HTTP 500" in batching["reason"]
    assert len(fallback_warnings(caplog)) == 1


async def test_a_refused_schema_in_a_batch_steps_down_and_keeps_batching(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """A list refused for its response_format is the ladder's business, not a sign lists are refused."""
    server = fake_llm(refuse_json_schema=True)
    spec = one_node_graph({"w": model_spec(server, endpoint="completions", batch_size=4, batch_wait_ms=300,
                                           max_concurrency=4)},
                          messages=None, prompt="Rate {{ topic }}:", output_schema=VERDICT, output=None)
    spec["run"] = {"max_in_flight": 4}
    result = await synthloom.arun(write_graph(spec, SEEDS[:12]), tmp_path / "out", retry_base_delay=0.001)
    assert result.manifest["counts"]["written"] == 12
    assert server.requests == 1 + 3 and server.statuses[500] == 1  # one refused list, then lists of 4
    assert [len(body["prompt"]) for body in server.bodies] == [4, 4, 4, 4]
    assert kinds(server) == ["json_schema"] + ["json_object"] * 3
    assert "batching" not in result.manifest["models"]["w"]
    assert result.manifest["models"]["w"]["structured"]["fell_back_from"] == ["json_schema"]


async def test_a_raw_prompt_with_a_schema_is_sampled_again(fake_llm: Callable[..., FakeOpenAI],
                                                           write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """/v1/completions on llama.cpp ignores response_format: a reply that does not parse is asked for again,
    as a new sample (a new seed), the user's raw prompt left as written."""
    seen: dict[str, int] = {}

    def first_bad(body: dict[str, Any]) -> Any:
        seen[body["prompt"]] = seen.get(body["prompt"], 0) + 1
        return "{\"score\": " if seen[body["prompt"]] == 1 else example_for_schema(VERDICT)

    server = fake_llm(script=[("Rate", first_bad)])
    spec = one_node_graph({"w": model_spec(server, max_concurrency=1, params={"seed": 7})}, messages=None,
                          prompt="Rate {{ topic }}:", output_schema=VERDICT, output=None)
    result = await synthloom.arun(write_graph(spec, SEEDS[:3]), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 3 and server.requests == 6
    assert all(body["prompt"] == f"Rate topic {index // 2}:" for index, body in
               enumerate(sorted(server.bodies, key=lambda body: body["prompt"])))  # as written, twice each
    assert sorted(body["seed"] for body in server.bodies if body["prompt"] == "Rate topic 0:")[0] == 7
    assert len({body["seed"] for body in server.bodies if body["prompt"] == "Rate topic 0:"}) == 2

    server.reset_counts()
    seen.clear()
    spec["nodes"]["answer"]["parse_retries"] = 0
    result = await synthloom.arun(write_graph(spec, SEEDS[3:5]), tmp_path / "again")
    assert result.manifest["counts"]["failed"] == 2 and server.requests == 2


def test_the_cli_logs_the_step_down_once(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*", refuse_json_schema=True)
    out = tmp_path / "run"
    command = ["run", "sycophancy", "-n", "4", "--endpoint", server.url, "--set",
               "models.default.max_concurrency=1", "-o", str(out), "-q"]
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", *command], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert len([line for line in done.stderr.splitlines() if "refused json_schema" in line]) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["default"]["structured"]["mode"] == "json_object"
    assert manifest["counts"]["failed"] == 0 and server.statuses[500] == 1


def test_structured_setting_is_checked(write_graph: Callable[..., Path]) -> None:
    spec = one_node_graph({"w": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                 "structured": "grammar"}})
    with pytest.raises(synthloom.ConfigError, match="structured"):
        synthloom.load(write_graph(spec, SEEDS[:1]))



BODY = {"model": "m", "messages": [], "n": 2, "temperature": 0.7, "max_tokens": 64,
        "response_format": {"type": "json_schema"}}


@pytest.mark.parametrize(("message", "named"), [
    ("1 validation error: {'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text'\"}",
     {"response_format"}),
    ("Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
     {"response_format"}),
    ("Invalid value for 'temperature': expected a number <= 2", {"temperature"}),
    ("max_tokens is too large: 99999", {"max_tokens"}),
    ("model overloaded, n/a, try again", set()),
    ("injected fault 500", set()),
])
def test_which_fields_a_server_message_names(message: str, named: set[str]) -> None:
    assert fields_named(message, BODY) == named


@pytest.mark.parametrize(("status", "retried"), [(500, False), (501, False), (502, True), (503, True),
                                                 (504, True)])
def test_only_a_500_or_501_naming_a_field_is_final(status: int, retried: bool) -> None:
    assert is_retryable(status, frozenset({"response_format"})) is retried
    assert is_retryable(status)

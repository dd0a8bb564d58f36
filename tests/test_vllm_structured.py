"""Structured output against a server that answers as current vLLM does (the fixture's `like_vllm`): the
`structured_outputs` rung, a fixed mode whose field the server ignores saying so once with the mode to
try, and a JSON reply cut off by max_tokens asked once more with a larger budget, never with the same."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom.engine.generate import CUT_BUDGET_FACTOR

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.test_models import SEEDS, one_node_graph
from tests.test_run import lines
from tests.test_structured_ladder import VERDICT, kinds


def schema_graph(server: FakeOpenAI, node: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    return one_node_graph({"w": model_spec(server, max_concurrency=1, **model)}, output_schema=VERDICT,
                          output=None, **(node or {}))


def warnings_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == logger]


async def test_structured_outputs_is_followed_by_current_vllm(fake_llm: Callable[..., FakeOpenAI],
                                                              write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(like_vllm=True)
    result = await synthloom.arun(write_graph(schema_graph(server, structured="structured_outputs"), SEEDS[:3]),
                                  tmp_path / "out")
    assert result.manifest["counts"]["written"] == 3 and server.requests == 3
    assert all(body["structured_outputs"] == {"json": VERDICT} for body in server.bodies)
    assert all(record["score"] == 8 for record in lines(result.path("raw")))
    assert result.manifest["models"]["w"]["structured"] == {"mode": "structured_outputs"}


@pytest.mark.parametrize(("mode", "field", "advice"), [
    ("guided_json", "guided_json", "try structured: structured_outputs (vLLM 0.10 and newer) or json_schema"),
    ("json_object", "response_format", "try structured: json_schema (OpenAI, vLLM, SGLang) or auto"),
])
async def test_a_fixed_mode_the_server_ignores_says_so_once(
        mode: str, field: str, advice: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """vLLM 0.10+ dropped guided_json and ignores json_object's schema, without an error: every reply misses
    the schema, and one line names the field ignored and the mode to try instead."""
    server = fake_llm(like_vllm=True)
    result = await synthloom.arun(write_graph(schema_graph(server, structured=mode), SEEDS[:3]), tmp_path / "out",
                                  retry_base_delay=0.001)
    assert result.manifest["counts"]["failed"] == 3
    said = [line for line in warnings_of(caplog, "synthloom.models") if "seems to ignore" in line]
    assert len(said) == 1 and f"`{field}`" in said[0] and advice in said[0] and f"structured: {mode}" in said[0]
    assert advice in result.manifest["models"]["w"]["structured"]["ignored"]


async def test_auto_on_current_vllm_needs_no_step_and_says_nothing(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    server = fake_llm(like_vllm=True)
    result = await synthloom.arun(write_graph(schema_graph(server), SEEDS[:3]), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 3 and kinds(server) == ["json_schema"] * 3
    assert result.manifest["models"]["w"]["structured"] == {"mode": "json_schema"}
    assert not warnings_of(caplog, "synthloom.models")


async def test_a_cut_off_json_reply_is_asked_again_with_a_larger_budget(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """max_tokens 40 cuts the JSON (finish_reason length); the same budget would be cut again, so the one
    retry asks for CUT_BUDGET_FACTOR times as many tokens, and the record is written."""
    server = fake_llm(like_vllm=True, cut_json_below=100)
    result = await synthloom.arun(write_graph(schema_graph(server, {"params": {"max_tokens": 40}}), SEEDS[:3]),
                                  tmp_path / "out")
    assert result.manifest["counts"]["written"] == 3 and server.requests == 6
    assert sorted(body["max_tokens"] for body in server.bodies) == [40] * 3 + [40 * CUT_BUDGET_FACTOR] * 3
    assert all(len(body["messages"]) == 1 for body in server.bodies)  # not shown as a mistake: nothing was wrong
    said = warnings_of(caplog, "synthloom.engine.generate")
    assert len(said) == 1 and "node 'answer'" in said[0] and "finish_reason 'length', max_tokens 40" in said[0]
    assert f"max_tokens {40 * CUT_BUDGET_FACTOR}" in said[0]


async def test_a_reply_cut_off_twice_fails_at_once_saying_why(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Cut again at the larger budget: the record fails after two requests (not parse_retries + 1 with the
    same budget), naming the finish reason, both budgets and the key to raise."""
    server = fake_llm(like_vllm=True, cut_json_below=10_000)
    out = tmp_path / "out"
    result = await synthloom.arun(write_graph(schema_graph(server, {"params": {"max_tokens": 80}}), SEEDS[:2]), out)
    assert result.manifest["counts"]["failed"] == 2 and server.requests == 4
    for failure in lines(out / "failed.jsonl"):
        assert failure["node"] == "answer"
        assert "cut off by max_tokens (finish_reason 'length', max_tokens 320, asked again after a cut at 80)" \
            in failure["message"]
        assert "raise nodes.answer.params.max_tokens" in failure["message"]


async def test_a_cut_off_reply_without_a_known_budget_fails_at_once(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(like_vllm=True, cut_json_below=10_000)
    out = tmp_path / "out"
    result = await synthloom.arun(write_graph(schema_graph(server), SEEDS[:1]), out)
    assert result.manifest["counts"]["failed"] == 1 and server.requests == 1
    assert "the server's default max_tokens" in lines(out / "failed.jsonl")[0]["message"]

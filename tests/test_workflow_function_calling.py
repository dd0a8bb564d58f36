"""The function_calling workflow (graphs/function_calling.yaml) end to end with the real MCP server process
it ships: against the fixture server (native tool calls, scripted per attempt), and on the embedded model
(tool calls as constrained JSON). Verified trajectories become SFT records in TRL's tool-calling format,
verified-vs-failed attempts DPO pairs."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.fixture_server import FakeOpenAI, ToolCalls

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"

QUERIES = {"race distance": "How many kilometres is a 26.2 mi marathon?",
           "restaurant bill": "What is (84 + 12.6) / 3?",
           "capital of a country": "What is the capital of Kenya?"}
GOOD = {QUERIES["race distance"]: ("convert_units", {"value": 26.2, "from_unit": "mi", "to_unit": "km"}),
        QUERIES["restaurant bill"]: ("calculate", {"expression": "(84 + 12.6) / 3"}),
        QUERIES["capital of a country"]: ("lookup_country", {"country": "Kenya", "field": "capital"})}
BAD = {QUERIES["race distance"]: ("convert_units", {"value": 26.2, "from_unit": "leagues", "to_unit": "km"}),
       QUERIES["restaurant bill"]: GOOD[QUERIES["restaurant bill"]],
       QUERIES["capital of a country"]: ("lookup_country", {"country": "Kenya"})}
"""The hot attempt: an unknown unit (fails execution), the same call, a missing argument (fails format)."""


def scripted(body: dict[str, Any]) -> Any:
    system = body["messages"][0]["content"]
    user = body["messages"][1]["content"] if len(body["messages"]) > 1 else ""
    if system.startswith("You write realistic requests"):
        return next(query for theme, query in QUERIES.items() if theme in user)
    if system.startswith("You check answers"):
        return {"a_answers": True, "b_answers": True}
    assert body["tool_choice"] == ("required" if len(body["messages"]) == 2 else "auto")
    results = [message["content"] for message in body["messages"] if message["role"] == "tool"]
    if results:
        return f"From the tool: {results[0]}"
    name, arguments = (GOOD if body["temperature"] == 0.3 else BAD)[user]
    return ToolCalls(((name, arguments),))


async def test_against_the_fixture_with_the_real_mcp_server(fake_llm: Callable[..., FakeOpenAI],
                                                            tmp_path: Path) -> None:
    server = fake_llm(model="*", script=[(".", scripted)])
    graph = synthloom.load(GRAPHS / "function_calling.yaml", endpoint=server.url)
    result = await synthloom.arun(graph, tmp_path / "out", limit=3)
    assert result.manifest["status"] == "completed", result.manifest
    raw = {record["query"]: record for record in result.records("raw")}
    marathon, bill, capital = (raw[QUERIES[theme]] for theme in QUERIES)
    assert marathon["attempt_a_calls"][0]["result"] == "42.164813"  # 26.2 * 1.609344, the MCP server's own arithmetic
    assert (marathon["a_stage"], marathon["b_stage"]) == ("judge", "execution")
    assert marathon["attempt_b_calls"][0]["result"].startswith("Error executing tool convert_units: "
                                                                "ValueError: unknown unit 'leagues'")
    assert (bill["a_stage"], bill["b_stage"]) == ("judge", "judge")
    assert (capital["a_stage"], capital["b_stage"]) == ("judge", "format")
    assert capital["attempt_a_calls"][0]["result"] == "Nairobi"

    sft = list(result.records("sft"))
    assert len(sft) == 3
    for record in sft:
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
        call = record["messages"][2]["tool_calls"][0]["function"]
        assert (call["name"], call["arguments"]) == GOOD[record["messages"][1]["content"]]
        assert {tool["function"]["name"] for tool in record["tools"]} == {"calculate", "convert_units",
                                                                          "lookup_country"}
    dpo = {record["prompt"][1]["content"]: record for record in result.records("dpo")}
    assert set(dpo) == {QUERIES["race distance"], QUERIES["capital of a country"]}
    pair = dpo[QUERIES["race distance"]]
    assert pair["chosen"][0]["tool_calls"][0]["function"]["arguments"]["from_unit"] == "mi"
    assert pair["rejected"][0]["tool_calls"][0]["function"]["arguments"]["from_unit"] == "leagues"
    assert pair["rejected"][1]["content"].startswith("error: Error executing tool convert_units")
    assert pair["tools"] == sft[0]["tools"]


@pytest.mark.embedded
@pytest.mark.timeout(900)  # about ten model calls of 600-token prompts; minutes on a busy 2-core machine
def test_on_the_embedded_model_tool_calls_are_constrained_json(tmp_path: Path) -> None:
    result = synthloom.run(GRAPHS / "function_calling.yaml", tmp_path / "out", limit=1)
    assert result.manifest["status"] == "completed", result.manifest
    failures = tmp_path / "out" / "failed.jsonl"  # written when a record failed
    failed = [json.loads(line) for line in failures.read_text().splitlines()] if failures.exists() else []
    raw = list(result.records("raw"))
    assert len(raw) + len(failed) == 1
    assert raw, failed
    for record in raw:  # tool_choice required: every attempt called a tool of the real server
        for calls in (record["attempt_a_calls"], record["attempt_b_calls"]):
            assert calls and all(call["name"] in {"calculate", "convert_units", "lookup_country"} for call in calls)
            assert all(call["result"] for call in calls)
        assert record["a_stage"] in {"format", "execution", "judge"}
    for record in result.records("sft"):
        assert record["messages"][2]["tool_calls"] and record["tools"]

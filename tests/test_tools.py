"""Tools in `llm` nodes: Python functions and a real MCP server process (`python -m
synthloom_graphs.tool_server`) as `tools:` entries, the tool loop over native `tool_calls` against the fixture
server, each entry's limits (budget, timeout, size cap), errors fed back to the model, the code-trust rules
for MCP commands, and no server process left behind however the run ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom.errors import ConfigError

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI, ToolCalls
from tests.node_helpers import lines

ROOT = Path(__file__).resolve().parents[1]
KIT = ["synthloom_graphs.toolkit:calculate", "synthloom_graphs.toolkit:convert_units",
       "synthloom_graphs.toolkit:lookup_country"]
SERVER = ["python", "-m", "synthloom_graphs.tool_server"]


def tool_results(body: dict[str, Any]) -> list[str]:
    return [message["content"] for message in body["messages"] if message["role"] == "tool"]


def calls_then_answers(*calls: tuple[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """A model that makes `calls` in its first turn, then answers with the results it was given."""
    def reply(body: dict[str, Any]) -> Any:
        results = tool_results(body)
        return f"Results: {' | '.join(results)}" if results else ToolCalls(calls)
    return reply


def tool_graph(server: FakeOpenAI, tools: dict[str, Any], **node: Any) -> dict[str, Any]:
    return {
        "name": "tooled",
        "models": {"w": model_spec(server)},
        "tools": tools,
        "nodes": {"solve": {"type": "llm", "model": "w", "tools": list(tools),
                            "messages": [{"role": "user", "content": "{{ question }}"}],
                            "output": "answer", "trajectory": "trajectory", **node}},
        "outputs": [{"name": "sft", "format": "sft", "messages_from": "trajectory", "tools_from": "trajectory_tools"},
                    {"name": "raw", "format": "raw"}],
    }


async def run_graph(write_graph: Callable[..., Path], tmp_path: Path, spec: dict[str, Any],
                    seeds: list[dict[str, Any]] | None = None, **options: Any) -> synthloom.RunResult:
    path = write_graph(spec, seeds or [{"question": "What is 2*(3+4) in km as m?"}])
    return await synthloom.arun(path, tmp_path / "out", trace=True, **options)


async def test_python_tools_run_in_the_native_loop_and_the_trajectory_is_trls(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("calculate", {"expression": "2*(3+4)"}),
                                                       ("convert_units", {"value": 14, "from_unit": "km",
                                                                          "to_unit": "m"})))])
    result = await run_graph(write_graph, tmp_path, tool_graph(server, {"kit": {"python": KIT}}))
    [record] = lines(result.path("sft"))
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]
    call = record["messages"][1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"] == {"name": "calculate",
                                                               "arguments": {"expression": "2*(3+4)"}}
    assert [m["content"] for m in record["messages"][2:4]] == ["14.0", "14000.0"]
    assert record["messages"][2]["name"] == "calculate" and record["messages"][2]["tool_call_id"] == call["id"]
    assert record["messages"][-1]["content"] == "Results: 14.0 | 14000.0"
    assert [tool["function"]["name"] for tool in record["tools"]] == ["calculate", "convert_units",
                                                                       "lookup_country"]
    assert record["tools"][1]["function"]["parameters"]["required"] == ["value", "from_unit", "to_unit"]
    first, second = server.bodies
    assert [tool["function"]["name"] for tool in first["tools"]] == ["calculate", "convert_units",
                                                                     "lookup_country"]
    assert first["tool_choice"] == "auto"
    assert second["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"expression": "2*(3+4)"}'
    assert tool_results(second) == ["14.0", "14000.0"]
    [raw] = lines(result.path("raw"))
    assert raw["answer"] == "Results: 14.0 | 14000.0"
    assert [(c["name"], c["ok"]) for c in raw["trajectory_calls"]] == [("calculate", True), ("convert_units", True)]
    [step] = [json.loads(line) for line in (result.path("sft").parent / "traces.jsonl").read_text().splitlines()]
    assert [(c["round"], c["tool"], c["result"]) for c in step["tool_calls"]] == [(0, "calculate", "14.0"),
                                                                                  (0, "convert_units", "14000.0")]
    assert step["calls"][0]["tool_calls"][0]["function"]["name"] == "calculate"


async def test_tool_errors_and_bad_arguments_are_fed_back_to_the_model(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(
        ("convert_units", {"value": 3, "from_unit": "km", "to_unit": "kg"}),   # the tool raises
        ("calculate", {"expr": "1"}),                                            # not the schema
        ("calculate", "{not json"),                                              # not JSON
        ("no_such_tool", {})))])
    result = await run_graph(write_graph, tmp_path, tool_graph(server, {"kit": {"python": KIT}}))
    [record] = lines(result.path("raw"))
    fed = tool_results(server.bodies[1])
    assert fed[0] == "error: ValueError: cannot convert length (km) to mass (kg)"
    assert fed[1].startswith("error: invalid arguments at the arguments: 'expression' is a required property")
    assert fed[2] == "error: the arguments are not valid JSON: {not json"
    assert fed[3].startswith("error: there is no tool named 'no_such_tool'")
    assert [c["ok"] for c in record["trajectory_calls"]] == [False, False, False, False]
    assert record["answer"].startswith("Results: error: ValueError")


async def test_the_per_record_budget_timeout_and_size_cap_hold(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "slow_tools.py").write_text(
        "import time\n\n\ndef nap(seconds: float) -> str:\n    '''Sleep.'''\n    time.sleep(seconds)\n"
        "    return 'rested'\n\n\ndef long_text(size: int) -> str:\n    '''Make text.'''\n    return 'x' * size\n")
    server = fake_llm(script=[(".", calls_then_answers(
        ("calculate", {"expression": "1+1"}), ("calculate", {"expression": "2+2"}),
        ("nap", {"seconds": 3}), ("long_text", {"size": 50})))])
    tools = {"kit": {"python": KIT[:1], "max_calls": 1},
             "slow": {"python": ["slow_tools:nap"], "timeout": 0.2},
             "big": {"python": ["slow_tools:long_text"], "max_result_chars": 10}}
    started = time.monotonic()
    await run_graph(write_graph, tmp_path, tool_graph(server, tools))
    fed = tool_results(server.bodies[1])
    assert fed[0] == "2.0"
    assert fed[1].startswith("error: not called: this conversation has used its 1 calls of 'kit' tools")
    assert fed[2] == "error: nap gave no result within 0.2s"
    assert fed[3] == "x" * 10 + "\n[cut: the result has 50 characters; the first 10 are shown]"
    assert time.monotonic() - started < 3  # the run did not wait for the sleeping tool


async def test_a_real_mcp_server_process_serves_the_tools(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"atlantis": {"capital": "Poseidonia"}}))
    server = fake_llm(script=[(".", calls_then_answers(("lookup_country", {"country": "Atlantis",
                                                                           "field": "capital"}),
                                                       ("calculate", {"expression": "6*7"})))])
    tools = {"kit": {"command": [*SERVER, "--table", str(table)], "only": ["lookup_country", "calculate"]}}
    result = await run_graph(write_graph, tmp_path, tool_graph(server, tools))
    [record] = lines(result.path("sft"))
    assert [m["content"] for m in record["messages"] if m["role"] == "tool"] == ["Poseidonia", "42.0"]
    assert [tool["function"]["name"] for tool in record["tools"]] == ["calculate", "lookup_country"]
    assert not _servers_running(str(table))  # the session closed with the run, and its process with it


async def test_a_failing_mcp_tool_is_fed_back_with_the_servers_words(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("calculate", {"expression": "1/0"})))])
    await run_graph(write_graph, tmp_path, tool_graph(server, {"kit": {"command": SERVER}}))
    assert tool_results(server.bodies[1]) == ["error: Error executing tool calculate: ZeroDivisionError: "
                                              "division by zero"]


@pytest.mark.parametrize(("command", "words"), [
    (["sh", "-c", "touch pwned"], "starts the program 'sh', which a graph may run only with --allow-code sh"),
    (["python", "-m", "http.server"], "graph files may not run 'http.server'"),
])
def test_a_strangers_graph_cannot_start_an_mcp_server_without_consent(
        write_graph: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        command: list[str], words: str) -> None:
    monkeypatch.delenv("SYNTHLOOM_ALLOW_CODE")
    spec = {"name": "stranger", "tools": {"evil": {"command": command}},
            "run": {"allow_code": ["sh", "http"]},
            "nodes": {"ask": {"type": "llm", "tools": ["evil"], "messages": [{"role": "user", "content": "hi"}],
                              "output": "answer"}}}
    path = write_graph(spec)
    with pytest.raises(ConfigError) as refused:
        synthloom.load(path)
    assert words in str(refused.value) and "tools.evil.command" in str(refused.value)
    assert not (tmp_path / "pwned").exists()
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0 and words in " ".join(done.stderr.split()) and "Traceback" not in done.stderr
    allowed = ["--trust-graph"]  # the graph's own run.allow_code counts once the user trusts the graph
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(path), *allowed],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert f"tools.evil.command: {' '.join(command)} <- " in done.stdout
    assert not (tmp_path / "pwned").exists()  # validate names the server; it never starts it


def test_validate_names_the_shipped_server_and_python_tools(write_graph: Callable[..., Path]) -> None:
    spec = {"name": "ours", "tools": {"kit": {"command": SERVER}, "fns": {"python": KIT[:1]}},
            "nodes": {"ask": {"type": "llm", "tools": ["kit", "fns"],
                              "messages": [{"role": "user", "content": "hi"}], "output": "answer"}}}
    graph = synthloom.load(write_graph(spec), run_folder_code=False)
    uses = {use.where: (use.target, use.reason) for use in graph.code.uses}
    assert uses["tools.kit.command"] == (" ".join(SERVER), "part of synthloom")
    assert uses["tools.fns.python.0"] == (KIT[0], "part of synthloom")


def test_a_node_naming_an_unknown_tools_entry_is_refused(write_graph: Callable[..., Path]) -> None:
    spec = {"name": "typo", "tools": {"kit": {"python": KIT[:1]}},
            "nodes": {"ask": {"type": "llm", "tools": ["kits"], "messages": [{"role": "user", "content": "hi"}],
                              "output": "answer"}}}
    with pytest.raises(ConfigError, match=r"nodes.ask.tools: unknown tools entry 'kits' .*did you mean 'kit'"):
        synthloom.load(write_graph(spec))


def _servers_running(marker: str) -> list[int]:
    """Tool server processes whose command line holds `marker`, wherever they were reparented."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "synthloom_graphs.tool_server" in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_no_mcp_server_outlives_a_stopped_or_killed_run(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        how: signal.Signals) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("calculate", {"expression": "1+1"})))], hold=["hold"])
    table = tmp_path / f"table-{how.name}.json"
    table.write_text("{}")
    path = write_graph(tool_graph(server, {"kit": {"command": [*SERVER, "--table", str(table)]}}),
                       [{"question": "hold on"}])
    run = subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(path), "-o", str(tmp_path / "out")],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (server.held and _servers_running(str(table))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.held and _servers_running(str(table)), "the run never reached its model call"
    run.send_signal(how)
    if how == signal.SIGINT:
        time.sleep(0.5)
        run.send_signal(how)  # the second Ctrl-C cancels what is in flight
    run.wait(60)
    deadline = time.monotonic() + 20
    while _servers_running(str(table)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _servers_running(str(table))
    server.release()


async def test_the_agent_node_shares_the_graphs_tools_entries(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    def react(body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]["content"]
        if last.startswith("Result of calculate"):
            return {"answer": last}
        return {"tool": "calculate", "arguments": {"expression": "6*7"}}
    server = fake_llm(script=[(".", react)])
    spec = {"name": "agentic", "models": {"w": model_spec(server)},
            "tools": {"kit": {"command": SERVER, "only": ["calculate"], "max_calls": 1}},
            "nodes": {"solve": {"type": "agent", "model": "w", "tools": ["kit"], "input": "{{ question }}",
                                "trace": "trace"}},
            "outputs": [{"name": "raw", "format": "raw"}]}
    result = await run_graph(write_graph, tmp_path, spec)
    [record] = lines(result.path("raw"))
    assert record["answer"] == "Result of calculate: 42.0"  # from the MCP server process
    assert record["trace"][1]["tool_calls"][0]["function"] == {"name": "calculate",
                                                               "arguments": {"expression": "6*7"}}
    assert "calculate: Evaluate an arithmetic expression" in server.bodies[0]["messages"][0]["content"]


async def test_an_mcp_server_over_streamable_http(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = subprocess.Popen([sys.executable, "-m", "synthloom_graphs.tool_server", "--http", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        server = fake_llm(script=[(".", calls_then_answers(("convert_units", {"value": 100, "from_unit": "c",
                                                                              "to_unit": "f"})))])
        tools = {"remote": {"url": f"http://127.0.0.1:{port}/mcp"}}
        await run_graph(write_graph, tmp_path, tool_graph(server, tools))
        assert tool_results(server.bodies[1]) == ["212.0"]
    finally:
        served.terminate()
        served.wait(10)


async def test_a_server_refusing_native_tool_calls_gets_constrained_json_for_the_rest_of_the_run(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    def protocol(body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]["content"]
        if last.startswith("Result of calculate"):
            return {"answer": last}
        return {"tool": "calculate", "arguments": {"expression": "6*7"}}
    server = fake_llm(script=[(".", protocol)], refuse_tools=True)
    seeds = [{"question": "first"}, {"question": "second"}]
    result = await run_graph(write_graph, tmp_path, tool_graph(server, {"kit": {"python": KIT[:1]}}), seeds,
                             max_in_flight=1)
    records = lines(result.path("sft"))
    assert [record["messages"][-1]["content"] for record in records] == ["Result of calculate: 42.0"] * 2
    assert records[0]["messages"][1]["tool_calls"][0]["function"] == {"name": "calculate",
                                                                      "arguments": {"expression": "6*7"}}
    assert server.statuses[400] == 1  # asked natively once; the rest of the run in JSON
    assert all("tools" not in body for body in server.bodies[1:])
    assert "anyOf" in server.bodies[1]["response_format"]["json_schema"]["schema"]


async def test_a_replayed_run_takes_tool_calls_from_the_response_cache(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("calculate", {"expression": "2+3"})))])
    spec = tool_graph(server, {"kit": {"python": KIT[:1]}})
    first = await run_graph(write_graph, tmp_path, spec)
    asked = server.requests
    again = await synthloom.arun(tmp_path / "graph.yaml", tmp_path / "again")
    assert server.requests == asked  # both model turns, the tool-calling one too, came from the cache
    assert lines(again.path("sft"))[0]["messages"][1:] == lines(first.path("sft"))[0]["messages"][1:]


async def test_a_subgraph_calls_its_own_tools_entries(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", calls_then_answers(("calculate", {"expression": "3*3"})))])
    child = tool_graph(server, {"inner": {"command": SERVER, "only": ["calculate"]}})
    child.pop("outputs")
    write_graph(child, name="child.yaml")
    parent = {"name": "outer", "nodes": {"sub": {"type": "subgraph", "graph": "child.yaml",
                                                 "inputs": {"question": "question"}, "outputs": {"answer": "answer"}}},
              "outputs": [{"name": "raw", "format": "raw"}]}
    result = await run_graph(write_graph, tmp_path, parent)
    assert lines(result.path("raw"))[0]["answer"] == "Results: 9.0"


async def test_preview_shows_each_tool_call_and_closes_the_server(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    table = tmp_path / "preview-table.json"
    table.write_text(json.dumps({"oz": {"capital": "Emerald City"}}))
    server = fake_llm(script=[(".", calls_then_answers(("lookup_country", {"country": "Oz", "field": "capital"})))])
    path = write_graph(tool_graph(server, {"kit": {"command": [*SERVER, "--table", str(table)]}}),
                       [{"question": "Where does the wizard live?"}])
    [record] = await synthloom.apreview(path, n=1, use_cache=False)
    [step] = record["steps"]
    assert [(call["tool"], call["ok"], call["result"]) for call in step["tool_calls"]] == [
        ("lookup_country", True, "Emerald City")]
    assert record["outputs"]["sft"][0]["messages"][-1]["content"] == "Results: Emerald City"
    assert not _servers_running(str(table))

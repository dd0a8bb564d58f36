"""Ready-made workflows against a real OpenAI-compatible server: llama-cpp-python's own, on the shipped GGUF.

That server refuses `response_format: json_schema` (HTTP 500) and prompt lists; every workflow must still
write its records, the structured-output step down recorded in the manifest. Slow (a real model on the
CPU): marked `embedded`, few and short.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from synthloom_nodes.tagger import INPUT_QUALITY

from tests.server_process import free_port, served

pytestmark = pytest.mark.embedded
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 600.0
# pytest's own limit for a test here: its run's, plus the module's server start (counted in the first test)
within_the_run_timeout = pytest.mark.timeout(START_TIMEOUT_S + RUN_TIMEOUT_S + 60)



@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free loopback port, small (n_ctx 2048, one process); its base URL."""
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python's server extra: "
                                                       "pip install 'llama-cpp-python[server]' (in the test extra)")
    from synthloom.models.llama.client import default_gguf_path

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path_factory.mktemp("llama_cpp_server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False",
               "--interrupt_requests", "False"]
    with served("llama_cpp.server", command, url, log, start_timeout_s=START_TIMEOUT_S, poll_s=0.25,
                stop_timeout_s=10, answer_timeout_s=2):
        yield url


def run_workflow(name: str, url: str, out: Path, *overrides: str) -> dict[str, Any]:
    sets = [part for override in ("models.default.params.max_tokens=24", *overrides) for part in ("--set", override)]
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", name, "-n", "3", "--endpoint", url,
                           "-o", str(out), "-q", "--no-cache", *sets], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("refused json_schema") == 1, done.stderr  # the step down, said once
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["failed"] == 0, manifest["counts"]
    structured = manifest["models"]["default"]["structured"]
    assert structured["mode"] == "json_object" and structured["fell_back_from"] == ["json_schema"]
    assert "Input should be 'text' or 'json_object'" in structured["reason"]
    return manifest


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@within_the_run_timeout
def test_quickstart_through_llama_cpp_server(llama_cpp_server: str, tmp_path: Path) -> None:
    opened = "[{when: 'True', reason: opened for the test}]"  # which drafts a 135M model gets right is not the point
    manifest = run_workflow("quickstart", llama_cpp_server, tmp_path / "qs", "nodes.question.params.max_tokens=24",
                            f"nodes.keep_question.rules={opened}", f"nodes.keep_answer.rules={opened}",
                            f"nodes.judge_floor.rules={opened}")
    sft = records(tmp_path / "qs" / "sft.jsonl")
    assert len(sft) == manifest["counts"]["outputs"]["sft"] == 3
    assert all(1 <= record["metadata"]["score"] <= 10 for record in sft)  # the critic's parsed verdict


@within_the_run_timeout
def test_magpie_through_llama_cpp_server(llama_cpp_server: str, tmp_path: Path) -> None:
    """Raw /v1/completions for the instruction, a structured tagger call on chat; the Magpie-Pro gate is
    opened because a 135M judge rates nearly every instruction poor."""
    manifest = run_workflow("magpie", llama_cpp_server, tmp_path / "mp", "nodes.instruction.params.max_tokens=24",
                            "nodes.filter.rules=[{when: 'True', reason: opened for the test}]")
    sft = records(tmp_path / "mp" / "sft.jsonl")
    assert len(sft) == manifest["counts"]["outputs"]["sft"] >= 1
    assert all(record["metadata"]["input_quality"] in INPUT_QUALITY for record in sft)


@within_the_run_timeout
def test_sycophancy_through_llama_cpp_server(llama_cpp_server: str, tmp_path: Path) -> None:
    """The knowledge check is structured (A or B); its filter is opened: which claims a 135M model knows is
    not what this test is about."""
    manifest = run_workflow("sycophancy", llama_cpp_server, tmp_path / "sy", "nodes.known_only.when=\"True\"")
    sft = records(tmp_path / "sy" / "sft.jsonl")
    assert len(sft) == manifest["counts"]["outputs"]["sft"] == 3


@within_the_run_timeout
def test_micro_batching_on_a_server_without_prompt_lists(llama_cpp_server: str, tmp_path: Path) -> None:
    """llama-cpp-python's server answers a prompt list with a bare 500: the model goes to single prompts."""
    graph = tmp_path / "batch.yaml"
    graph.write_text(json.dumps({
        "name": "batch", "seed": {"source": {"type": "none"}},
        "models": {"default": {"backend": "local", "batch_size": 4, "batch_wait_ms": 500,
                               "params": {"max_tokens": 8, "temperature": 0}}},
        "nodes": {"fruit": {"type": "llm", "prompt": "Item {{ index }}: a fruit is", "output": "fruit"}}}))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-n", "4", "--endpoint",
                           llama_cpp_server, "-o", str(out), "-q", "--no-cache"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 4 and manifest["counts"]["failed"] == 0
    assert manifest["models"]["default"]["batching"]["batch_size"] == 1
    assert done.stderr.count("refused a list") == 1

"""`--endpoint URL` alone: a model given no name is the one the server serves (`GET /v1/models`), as a
vLLM server answers 404 to the model name `default`; a server serving several makes a one-line error that
lists them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.fixture_server import FakeOpenAI

GRAPH = {
    "name": "ask",
    "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
    "nodes": {"answer": {"type": "llm", "messages": [{"role": "user", "content": "{{ topic }}"}],
                         "output": "answer"}},
    "outputs": [{"name": "raw", "format": "raw", "fields": ["topic", "answer"]}],
}


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "seeds.jsonl").write_text('{"topic": "tides"}\n{"topic": "moss"}\n')
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(GRAPH))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)


def test_endpoint_alone_uses_the_one_model_the_server_serves(tmp_path: Path,
                                                              fake_llm: Callable[..., FakeOpenAI]) -> None:
    server = fake_llm(model="org/served-model")  # answers 404 to any other model name
    done = run_cli(tmp_path, "run", "g.yaml", "-o", "out", "-q", "--endpoint", server.url)
    assert done.returncode == 0, done.stderr
    assert {body["model"] for body in server.bodies} == {"org/served-model"}
    assert server.statuses[404] == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 2
    assert manifest["model_settings"]["default"]["model"] == "org/served-model"


def test_a_named_model_is_not_asked_about(tmp_path: Path, fake_llm: Callable[..., FakeOpenAI]) -> None:
    server = fake_llm(model="*", served=["a", "b"])
    done = run_cli(tmp_path, "run", "g.yaml", "-o", "out", "-q", "--endpoint", server.url,
                   "--set", "models.default.model=mine")
    assert done.returncode == 0, done.stderr
    assert {body["model"] for body in server.bodies} == {"mine"}


def test_a_server_serving_several_models_asks_the_user_to_choose(tmp_path: Path,
                                                                  fake_llm: Callable[..., FakeOpenAI]) -> None:
    server = fake_llm(model="*", served=["small", "large"])
    done = run_cli(tmp_path, "run", "g.yaml", "-o", "out", "-q", "--endpoint", server.url)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.strip().endswith(f"models.default.model: no model name, and {server.url}/models serves 2 "
                                        f"models (small, large); give the name with --set models.default.model=NAME")
    assert server.bodies == [] and not (tmp_path / "out" / "manifest.json").exists()


def test_preview_names_the_model_too(tmp_path: Path, fake_llm: Callable[..., FakeOpenAI]) -> None:
    server = fake_llm(model="only-one")
    done = run_cli(tmp_path, "preview", "g.yaml", "-n", "1", "--json", "--endpoint", server.url)
    assert done.returncode == 0, done.stderr
    assert [body["model"] for body in server.bodies] == ["only-one"]


def test_a_subgraphs_unnamed_model_is_named_too(tmp_path: Path, fake_llm: Callable[..., FakeOpenAI]) -> None:
    """A child graph's server model with no name, merged in when the subgraph node is set up."""
    server = fake_llm(model="child-model")
    child = {"name": "child", "models": {"c": {"backend": "openai", "base_url": server.url}},
             "nodes": {"say": {"type": "llm", "model": "c", "messages": [{"role": "user", "content": "{{ t }}"}],
                               "output": "said"}}}
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    parent = {"name": "parent", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
              "nodes": {"sub": {"type": "subgraph", "graph": "child.yaml", "inputs": {"t": "topic"},
                                "outputs": {"answer": "said"}}},
              "outputs": [{"name": "raw", "format": "raw", "fields": ["answer"]}]}
    (tmp_path / "seeds.jsonl").write_text('{"topic": "tides"}\n')
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(parent))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", "p.yaml", "-o", "out", "-q"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert [body["model"] for body in server.bodies] == ["child-model"]

"""`synthloom serve` shares the embedded model over HTTP; profiles fill model keys; vLLM says what it needs."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import synthloom
from synthloom.config import ModelConfig
from synthloom.errors import ConfigError


def test_profile_fills_model_keys_and_graph_keys_win(write_graph: Callable[..., Path]) -> None:
    spec = {"name": "p", "models": {"w": {"profile": "vllm", "model": "my-model", "max_concurrency": 7}},
            "nodes": {"a": {"type": "llm", "model": "w", "output": "x",
                            "messages": [{"role": "user", "content": "hi"}]}}}
    config = synthloom.load(write_graph(spec)).config.models["w"]
    assert config.backend == "openai" and config.base_url == "http://127.0.0.1:8000/v1"
    assert config.model == "my-model" and config.max_concurrency == 7 and config.timeout == 600
    spec["models"]["w"]["profile"] = "vllm-typo"
    with pytest.raises(ConfigError, match=r"graph.yaml:\d+: models.w.profile: no profile 'vllm-typo'"):
        synthloom.load(write_graph(spec))


def test_vllm_backend_without_vllm_or_gpu_is_one_clear_line() -> None:
    from synthloom.models.pool import build_client
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here; the GPU path is checked on a GPU machine")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match=r"backend 'vllm' needs vLLM: pip install -e '\.\[vllm\]'"):
        build_client("w", ModelConfig(backend="vllm", model="Qwen/Qwen2.5-0.5B-Instruct"), 0.5)


@pytest.mark.embedded
def test_serve_shares_the_embedded_model_with_a_run(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    server = subprocess.Popen([sys.executable, "-m", "synthloom.cli", "serve", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        spec = {"name": "shared",
                "models": {"w": {"profile": "synthloom_serve", "base_url": url, "params": {"max_tokens": 12}}},
                "nodes": {"a": {"type": "llm", "model": "w", "output": "answer",
                                "messages": [{"role": "user", "content": "Say hello to {{ name }}."}]},
                          "j": {"type": "llm", "model": "w", "output": "verdict", "params": {"max_tokens": 24},
                                "messages": [{"role": "user", "content": "Is this friendly? {{ answer }}"}],
                                "output_schema": {"type": "object", "required": ["friendly"],
                                                  "properties": {"friendly": {"type": "boolean"}}}}},
                "edges": [["a", "j"]], "outputs": [{"name": "raw", "format": "raw"}]}
        result = synthloom.run(write_graph(spec, [{"name": "Ada"}]), tmp_path / "out")
        (record,) = list(result.records("raw"))
        assert record["answer"].strip() and isinstance(record["verdict"]["friendly"], bool)
        assert result.manifest["models"]["w"]["completion_tokens"] > 0
    finally:
        server.terminate()
        server.wait(10)

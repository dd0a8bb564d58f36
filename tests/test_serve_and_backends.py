"""`synthloom serve` shares the embedded model over HTTP; profiles fill model keys; vLLM says what it needs."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import synthloom
from synthloom.config.schema import ModelConfig
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
    from synthloom.models.clients import build_client
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


# -- serve: for programs on this machine, not for web pages ------------------------------------------------

def start_serve(*extra: str) -> tuple[subprocess.Popen[str], str]:
    """A real `synthloom serve` on a free port; its model loads only when a request reaches it."""
    server = subprocess.Popen([sys.executable, "-m", "synthloom.cli", "serve", "--port", "0", *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), server.stderr.read() if server.stderr else url
    return server, url


def post(url: str, path: str, body: bytes, headers: dict[str, str], timeout: float = 60) -> tuple[int, dict[str, Any]]:
    """A POST whose headers (Host among them) are exactly the given ones, as a browser's could be."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.putrequest("POST", parts.path + path, skip_host=True, skip_accept_encoding=True)
        for key, value in {"Host": parts.netloc, **headers, "Content-Length": str(len(body))}.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    server, url = start_serve()
    try:
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("headers, status", [
    ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403),   # a page's simple POST
    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
    ({"Content-Type": "application/json", "Origin": "null"}, 403),            # a sandboxed frame
    ({"Content-Type": "text/plain"}, 415),                                    # no Origin, still not JSON
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({}, 415),
])
def test_serve_refuses_what_a_web_page_could_send(serve_url: str, headers: dict[str, str], status: int) -> None:
    code, body = post(serve_url, "/chat/completions", CHAT, headers)
    assert code == status and "\n" not in body["error"]["message"], body


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost",
                                  "127.0.0.1:1"])
def test_serve_refuses_another_host_name_against_dns_rebinding(serve_url: str, host: str) -> None:
    """A page on a name that the attacker rebinds to 127.0.0.1 is same-origin to itself: only Host tells."""
    port = urlsplit(serve_url).port
    code, body = post(serve_url, "/chat/completions", CHAT,
                      {"Host": host.format(port=port), "Content-Type": "application/json"})
    assert code == 421 and "127.0.0.1" in body["error"]["message"], body


@pytest.mark.parametrize("schema, max_tokens", [({"type": "array", "minItems": 5000}, None),
                                                ({"type": "string", "minLength": 10**40}, None),
                                                ({"type": "object", "required": ["a"], "properties": {
                                                    "a": {"type": "array", "minItems": 300,
                                                          "items": {"type": "string", "minLength": 20}}}}, 64)])
def test_serve_refuses_a_schema_no_answer_within_max_tokens_can_satisfy(serve_url: str, schema: dict[str, Any],
                                                                         max_tokens: int | None) -> None:
    request = {"messages": [{"role": "user", "content": "list"}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
               **({"max_tokens": max_tokens} if max_tokens else {})}
    code, body = post(serve_url, "/chat/completions", json.dumps(request).encode(),
                      {"Content-Type": "application/json"})
    assert code == 400 and "max_tokens" in body["error"]["message"], body


@pytest.mark.parametrize("max_tokens", [0, -1, "many", 2.5, True])
def test_serve_refuses_an_unbounded_or_odd_max_tokens(serve_url: str, max_tokens: Any) -> None:
    request = {"prompt": "Once", "max_tokens": max_tokens}
    code, body = post(serve_url, "/completions", json.dumps(request).encode(), {"Content-Type": "application/json"})
    assert code == 400 and "max_tokens" in body["error"]["message"], body


def get_models(url: str, headers: dict[str, str]) -> int:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        connection.putrequest("GET", parts.path + "/models", skip_host=True)
        for key, value in {"Host": parts.netloc, **headers}.items():
            connection.putheader(key, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_serve_answers_its_own_names_and_origin(serve_url: str) -> None:
    port = urlsplit(serve_url).port
    assert get_models(serve_url, {}) == 200
    assert get_models(serve_url, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}) == 200
    assert get_models(serve_url, {"Origin": f"http://127.0.0.1:{port}"}) == 200
    assert get_models(serve_url, {"Origin": f"http://localhost:{port}"}) == 403  # another origin than its Host
    assert get_models(serve_url, {"Host": f"attacker.example:{port}"}) == 421


@pytest.mark.embedded
def test_serve_cuts_a_request_at_its_deadline() -> None:
    """A schema that forces a long answer (300 strings of 20 characters, about 1500 tokens) fits in
    max_tokens 1800, so it is admitted; the deadline cuts it, and the server goes on serving."""
    pytest.importorskip("llama_cpp")
    server, url = start_serve("--deadline", "2")
    try:
        schema = {"type": "array", "minItems": 300, "items": {"type": "string", "minLength": 20}}
        request = {"messages": [{"role": "user", "content": "List many words."}], "max_tokens": 1800,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
        code, body = post(url, "/chat/completions", json.dumps(request).encode(),
                          {"Content-Type": "application/json; charset=utf-8"}, timeout=120)
        assert code == 504 and "deadline" in body["error"]["message"], body
        assert server.poll() is None and get_models(url, {}) == 200
    finally:
        server.terminate()
        server.wait(10)

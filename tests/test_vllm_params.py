"""Request parameters mean one thing on every backend (`synthloom.config.sampling`): either spelling of the
repetition penalty reaches each server under the name it reads, a name nobody knows is refused when the
graph is checked (with file:line), and the in-process engine's settings never go into a request."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom.config.sampling import for_backend
from synthloom.errors import ConfigError

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.test_models import SEEDS, one_node_graph


@pytest.mark.parametrize("spelling", ["repeat_penalty", "repetition_penalty"])
async def test_either_spelling_of_the_penalty_reaches_the_server_under_both_names(
        spelling: str, fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
        tmp_path: Path) -> None:
    """vLLM reads repetition_penalty and drops repeat_penalty without a word; llama.cpp's servers the other way
    round: each server gets the name it reads."""
    server = fake_llm()
    spec = one_node_graph({"w": model_spec(server, params={spelling: 1.15, "max_tokens": 40})},
                          params={"temperature": 0.3})
    result = await synthloom.arun(write_graph(spec, SEEDS[:2]), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 2
    for body in server.bodies:
        assert body["repetition_penalty"] == body["repeat_penalty"] == 1.15
        assert body["temperature"] == 0.3 and body["max_tokens"] == 40


def test_each_backend_gets_its_own_names() -> None:
    params = {"repeat_penalty": 1.1, "max_tokens": 9, "stop": ["\n"], "seed": 3, "engine": {"enforce_eager": True},
              "extra": {"chat_template_kwargs": {"enable_thinking": False}}}
    assert for_backend(params, "vllm") == {"repetition_penalty": 1.1, "max_tokens": 9, "stop": ["\n"], "seed": 3}
    assert for_backend(params, "local") == {"repeat_penalty": 1.1, "max_tokens": 9, "stop": ["\n"], "seed": 3}
    assert for_backend(params, "openai") == {"repetition_penalty": 1.1, "repeat_penalty": 1.1, "max_tokens": 9,
                                             "stop": ["\n"], "seed": 3,
                                             "chat_template_kwargs": {"enable_thinking": False}}


async def test_extra_fields_are_sent_as_they_are_and_engine_settings_never(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = one_node_graph({"w": model_spec(server, params={"extra": {"chat_template_kwargs": {"x": 1}}})})
    result = await synthloom.arun(write_graph(spec, SEEDS[:1]), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 1
    assert server.bodies[0]["chat_template_kwargs"] == {"x": 1} and "extra" not in server.bodies[0]


def test_endpoint_drops_the_in_process_engine_settings(fake_llm: Callable[..., FakeOpenAI],
                                                       write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """A graph written for backend vllm, pointed at a server with --endpoint: the engine's settings stay home."""
    server = fake_llm(model="*")
    spec = one_node_graph({"w": {"backend": "vllm", "model": "m",
                                 "params": {"max_tokens": 20, "engine": {"enforce_eager": True}}}})
    synthloom.run(synthloom.load(write_graph(spec, SEEDS[:1]), endpoint=server.url), tmp_path / "out")
    assert server.bodies[0]["max_tokens"] == 20
    assert not {"engine", "enforce_eager"} & set(server.bodies[0])


def bad_graph_line(path: Path, key: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if f"{key}:" in line)


@pytest.mark.parametrize(("where", "params", "message"), [
    ("model", {"repeat_pnealty": 1.1}, "unknown sampling parameter 'repeat_pnealty'"),
    ("node", {"max_token": 10}, "unknown sampling parameter 'max_token'"),
    ("node", {"logprobs": True}, "a field only your server knows goes under params.extra"),
    ("model", {"engine": {"enforce_eager": True}}, "params.engine holds the in-process vLLM engine's settings"),
    ("model", {"repeat_penalty": 1.1, "repetition_penalty": 1.2}, "two spellings of one setting"),
])
def test_a_parameter_no_backend_takes_is_refused_when_the_graph_is_checked(
        where: str, params: dict[str, Any], message: str, write_graph: Callable[..., Path]) -> None:
    model: dict[str, Any] = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    node: dict[str, Any] = {}
    (model if where == "model" else node)["params"] = params
    path = write_graph(one_node_graph({"w": model}, **node))
    bad = list(params)[-1]
    with pytest.raises(ConfigError, match=message) as raised:
        synthloom.load(path)
    prefix = "models.w" if where == "model" else "nodes.answer"
    assert raised.value.key == f"{prefix}.params.{bad}"
    assert raised.value.where == f"{path}:{bad_graph_line(path, bad)}"


@pytest.mark.parametrize(("backend", "params", "message"), [
    ("local", {"min_tokens": 5}, r"the embedded model \(backend local\) takes no 'min_tokens'"),
    ("local", {"extra": {"a": 1}}, "params.extra holds fields sent as they are"),
    ("vllm", {"engine": "eager"}, "params.engine is a mapping of vLLM engine arguments"),
])
def test_a_parameter_the_models_backend_does_not_take_is_refused(
        backend: str, params: dict[str, Any], message: str, write_graph: Callable[..., Path]) -> None:
    model = {"backend": backend, **({"model": "m"} if backend == "vllm" else {}), "params": params}
    with pytest.raises(ConfigError, match=message):
        synthloom.load(write_graph(one_node_graph({"w": model})))


def test_a_conversation_roles_params_are_checked_against_its_own_model(write_graph: Callable[..., Path]) -> None:
    spec = {"name": "talk", "models": {"w": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
            "nodes": {"chat": {"type": "conversation", "opening": "hi", "roles": [
                {"name": "a", "model": "w", "params": {"repetition_penalty": 1.1}},
                {"name": "b", "params": {"min_tokens": 3}}]}},  # b is the embedded default: no min_tokens
            "outputs": [{"name": "raw", "format": "raw"}]}
    with pytest.raises(ConfigError, match="takes no 'min_tokens'") as raised:
        synthloom.load(write_graph(spec))
    assert raised.value.key == "nodes.chat.roles.1.params.min_tokens"


def test_set_takes_either_spelling_and_refuses_a_typo(write_graph: Callable[..., Path]) -> None:
    path = write_graph(one_node_graph({"w": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}),
                       SEEDS[:1])
    loaded = synthloom.load(path, ["models.w.params.repetition_penalty=1.2"])
    assert loaded.config.models["w"].params == {"repetition_penalty": 1.2}
    with pytest.raises(ConfigError, match="'repetition_penalt' is not a request parameter"):
        synthloom.load(path, ["models.w.params.repetition_penalt=1.2"])


def test_the_shipped_graphs_use_only_known_names() -> None:
    """The four graphs that set repeat_penalty still load (for every backend their models use)."""
    for name in ("agentinstruct", "dialogues", "fables", "rag_synth"):
        loaded = synthloom.load(name)
        assert loaded.config.models["default"].params["repeat_penalty"] > 1
        assert json.dumps(loaded.config.models["default"].params)

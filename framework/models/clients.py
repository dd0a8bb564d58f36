"""The models of one run, by name: builds each client once, consults the response cache, and counts
usage per model (the per-node count is passed in by the caller)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import ModelConfig
from ..errors import ConfigError, ModelCallError
from .base import Completion, LLMRequest, ModelClient
from .cache import ResponseCache, cache_key
from .permits import PermitProvider, with_permit
from .stats import UsageStats

DEFAULT_MODEL = "default"
EMBEDDED = ModelConfig(backend="local")
log = logging.getLogger("synthloom.models")


def build_client(name: str, config: ModelConfig, retry_base_delay: float, run_dir: Path | None = None,
                 cancel_batches: bool = False) -> ModelClient:
    """`run_dir`: the run's directory, where a batch model writes its submissions down; without one
    (`preview`), a batch model is called synchronously."""
    if config.backend == "openai" and config.batch is not None:
        if run_dir is not None:
            from .batch.client import BatchClient
            return BatchClient(name, config, run_dir, retry_base_delay=retry_base_delay,
                               cancel_on_close=cancel_batches)
        log.warning("model '%s' is a batch model; calling it synchronously here (batches are for `run`)", name)
    if config.backend == "openai":
        from .openai_http import OpenAIClient
        return OpenAIClient(name, config, retry_base_delay=retry_base_delay)
    if config.backend == "local":
        from .llama.client import LocalClient
        return LocalClient(name, config)
    if config.backend == "vllm":
        from .vllm_engine import VLLMClient
        return VLLMClient(name, config)
    raise ConfigError(f"unknown backend '{config.backend}'", key=f"models.{name}.backend")


@dataclass
class _Flight:
    """One call that identical requests wait on: set when it ends; `error` when it failed."""

    ended: asyncio.Event = field(default_factory=asyncio.Event)
    error: ModelCallError | None = None


class ModelPool:
    def __init__(self, configs: dict[str, ModelConfig], cache: ResponseCache | None = None,
                 retry_base_delay: float = 0.5, permits: PermitProvider | None = None,
                 run_dir: Path | None = None, cancel_batches: bool = False):
        self.configs = dict(configs)
        self.configs.setdefault(DEFAULT_MODEL, EMBEDDED)
        self.cache = cache
        self.retry_base_delay = retry_base_delay
        self.permits = permits  # budgets shared with other processes (run --ray); None: this process's own
        self.run_dir = run_dir  # where batch models write their submissions down; None: no batches (preview)
        self.cancel_batches = cancel_batches
        self._clients: dict[str, ModelClient] = {}
        self.usage: dict[str, UsageStats] = {}
        self._flights: dict[str, _Flight] = {}  # cache key -> the one call now asking it

    def client(self, name: str) -> ModelClient:
        if name not in self._clients:
            if name not in self.configs:
                raise ConfigError(f"unknown model '{name}'; define it under models:")
            self._clients[name] = build_client(name, self.configs[name], self.retry_base_delay, self.run_dir,
                                                self.cancel_batches)
            self.usage[name] = UsageStats()
        return self._clients[name]

    async def prepare(self, names: Iterable[str]) -> None:
        """Build the clients a run calls before its first record, so a missing key or file refuses the run;
        a server model given no name is named here by asking the server (before any cache key uses it)."""
        for name in names:
            client = self.client(name)
            if self.configs[name].backend == "openai" and self.configs[name].model is None:
                await client.name_the_model()  # type: ignore[attr-defined]  # both openai clients have it

    def identity(self, name: str) -> dict[str, Any]:
        config = self.configs[name]
        model = config.model or (config.path or "embedded-smollm2-135m")
        return {"backend": config.backend, "model": model, "params": config.params,
                "endpoint": config.endpoint}

    async def complete(self, name: str, request: LLMRequest, node_usage: UsageStats | None = None) -> Completion:
        client = self.client(name)
        config = self.configs[name]
        key = cache_key(self.identity(name), request) if self.cache else None
        completion = await self._cached_or_joined(key) if key else None
        if completion is None:
            flight = None
            if key:
                flight = self._flights[key] = _Flight()
            try:
                completion = await (client.complete(request) if self.permits is None else
                                    with_permit(self.permits, name, config.params, request, client.complete))
            except ModelCallError as error:
                self.usage[name].errors += 1
                self.usage[name].retries += max(0, error.attempts - 1)
                if node_usage is not None:
                    node_usage.errors += 1
                    node_usage.retries += max(0, error.attempts - 1)
                if flight is not None:
                    flight.error = error
                raise
            else:
                if self.cache and key:
                    self.cache.put(key, completion)
            finally:
                if key and flight is not None:
                    del self._flights[key]
                    flight.ended.set()
        for usage in (self.usage[name], node_usage):
            if usage is not None:
                usage.record(prompt_tokens=completion.prompt_tokens,
                             completion_tokens=completion.completion_tokens, latency=completion.latency,
                             attempts=completion.attempts, cached=completion.cached, price=config.price,
                             batched=completion.batched)
        return completion

    async def _cached_or_joined(self, key: str) -> Completion | None:
        """The cached answer. When the same request is being asked right now (records that share a prompt),
        first wait for that one call: an identical request then gets one answer, and one failure, however
        the records happen to overlap. None: ask. If the call waited on was cancelled, the next waiter asks."""
        assert self.cache is not None
        while (flight := self._flights.get(key)) is not None:
            await flight.ended.wait()
            if flight.error is not None:
                raise flight.error
        return self.cache.get(key)

    def adaptations(self, name: str) -> dict[str, Any]:
        """What a model's server turned out not to take, and what the run does instead, for the manifest:
        `structured` (the mode in use and the modes given up) and `batching` (single prompts, and why)."""
        client = self._clients.get(name)
        found: dict[str, Any] = {}
        ladder = getattr(client, "structured", None)  # openai backend only: the others constrain in-process
        status = ladder.status() if ladder is not None else None
        if status is not None:
            found["structured"] = status
        batching = getattr(client, "batching", None)
        if batching:
            found["batching"] = batching
        return found

    def batches(self) -> dict[str, dict[str, Any]]:
        """Per batch model: its batches now (pending, oldest pending age, calls waiting) and over the
        whole run (submitted, by how they ended, lines per batch), for the progress bar and the manifest."""
        return {name: client.batch_status() for name, client in self._clients.items()
                if hasattr(client, "batch_status")}

    def concurrency(self) -> dict[str, dict[str, Any]]:
        """Current and peak concurrency per model, for the progress bar and the manifest."""
        status: dict[str, dict[str, Any]] = {}
        for name, client in self._clients.items():
            limiter = getattr(client, "limiter", None)
            if limiter is not None:
                status[name] = {"limit": limiter.limit, "ceiling": limiter.ceiling, "peak": limiter.peak,
                                "cuts": limiter.cuts}
            decoded = client.decoded_batches() if hasattr(client, "decoded_batches") else None  # embedded: per step
            if decoded is not None:
                status[name] = decoded
            replicas = getattr(client, "replicas", None)
            if replicas is not None and len(replicas.replicas) > 1:
                status.setdefault(name, {})["replicas"] = replicas.status()
        return status

    async def close(self) -> None:
        """Close every client and the response cache (writing what it still holds)."""
        for client in self._clients.values():
            await client.close()
        if self.cache:
            self.cache.close()

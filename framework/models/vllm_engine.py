"""Backend `vllm`: vLLM's in-process async engine, for a GPU machine without a separate server.

Imported only when a graph asks for it. Without vLLM or a GPU the run stops with one line saying what to
do; the main production path is a `vllm serve` server reached with `backend: openai` (configs/vllm.yaml).
"""
from __future__ import annotations

import itertools
import time
from typing import Any

from ..config import ModelConfig
from ..errors import ConfigError, ModelCallError
from .base import Completion, LLMRequest

_SAMPLING_KEYS = {"temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "seed", "presence_penalty",
                  "frequency_penalty", "repetition_penalty"}
_request_ids = itertools.count()


def _require_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ConfigError("backend 'vllm' needs vLLM on a GPU machine: pip install -e '.[vllm]'; or run "
                          "`vllm serve MODEL` and use backend: openai (see configs/vllm.yaml)") from None
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        raise ConfigError("backend 'vllm' needs a GPU and none is visible; use backend: openai against a "
                          "`vllm serve` server, or backend: local on this machine")
    return vllm


class VLLMClient:
    """One AsyncLLMEngine per model; vLLM batches concurrent requests itself (continuous batching)."""

    def __init__(self, name: str, config: ModelConfig):
        self.name = name
        self.config = config
        self._vllm = _require_vllm()
        engine_args = self._vllm.AsyncEngineArgs(model=config.model, **config.params.get("engine", {}))
        self.engine = self._vllm.AsyncLLMEngine.from_engine_args(engine_args)
        self._tokenizer: Any = None

    async def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()

    async def _prompt(self, request: LLMRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        if self._tokenizer is None:
            self._tokenizer = await self.engine.get_tokenizer()
        prompt: str = self._tokenizer.apply_chat_template(list(request.messages or ()), tokenize=False,
                                                          add_generation_prompt=True)
        return prompt

    def _sampling(self, request: LLMRequest) -> Any:
        merged = {**self.config.params, **request.params}
        values = {key: value for key, value in merged.items() if key in _SAMPLING_KEYS}
        if request.sample and isinstance(values.get("seed"), int):
            values["seed"] += request.sample
        if request.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams
            values["structured_outputs"] = StructuredOutputsParams(json=request.json_schema)
        return self._vllm.SamplingParams(**values)

    async def complete(self, request: LLMRequest) -> Completion:
        started = time.monotonic()
        prompt = await self._prompt(request)
        final = None
        try:
            async for output in self.engine.generate(prompt, self._sampling(request),
                                                     f"synthloom-{next(_request_ids)}"):
                final = output
        except Exception as error:  # vLLM raises its own types; the record fails, the run goes on
            raise ModelCallError(f"{self.name}: vLLM failed: {error}", retryable=False) from None
        if final is None or not final.outputs:
            raise ModelCallError(f"{self.name}: vLLM returned no output", retryable=False)
        choice = final.outputs[0]
        return Completion(text=choice.text, prompt_tokens=len(final.prompt_token_ids or []),
                          completion_tokens=len(choice.token_ids), finish_reason=choice.finish_reason,
                          latency=time.monotonic() - started)

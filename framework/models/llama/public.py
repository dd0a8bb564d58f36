"""The embedded model through llama-cpp-python's public API only: one request at a time, on the engine's thread.

Why it exists: the batched engine (`engine`) reaches into `llama_cpp._internals`, private grammar fields
and recent context parameters, which a new llama-cpp-python may rename or change in meaning without notice.
`gate` runs the batched engine only on versions the tests pinned and this one elsewhere, so an upgrade
costs speed (no batching) rather than failing at import or changing outputs unseen.

Each request is one `Llama.create_chat_completion` (or `create_completion` for a raw prompt) with the same
parameters the batched engine honours: temperature, top-p/k, min-p, the three penalties, the seed, stop
strings, `max_tokens`, and a JSON schema as a public `LlamaGrammar`. The KV cache is reset before each call so a
request's output never depends on the one before it (llama-cpp-python would otherwise reuse a shared prefix).
A call already running finishes before a cancellation or a close takes effect; a waiting one is dropped.
"""
from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from ...errors import ConfigError, ModelCallError
from ..base import Completion
from .engine import NEEDS_LLAMA_CPP, EngineThread, Job
from .sequence import schema_grammar

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty",
                 "presence_penalty", "seed", "stop", "max_tokens")
"""The request parameters passed through (the names `config.sampling.for_backend` gives the local backend)."""


class PublicLlamaEngine(EngineThread):
    """A `llama_cpp.Llama` on a thread of its own, decoding the queue's requests one after another."""

    api = "public"

    def __init__(self, path: Any, n_ctx: int, slots: int, threads: int | None = None):
        self._current: Job | None = None
        self.llama: Any = None
        super().__init__(path, n_ctx, 1, threads)  # one sequence at a time, whatever the client asked

    def _in_flight(self) -> list[Job]:
        return [self._current] if self._current is not None else []

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ConfigError(NEEDS_LLAMA_CPP) from None
        self.llama = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.threads,
                           n_threads_batch=self.threads, verbose=False)

    def _free(self) -> None:
        llama = getattr(self, "llama", None)
        if llama is not None:
            llama.close()
            self.llama = None

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closing:
                    self._wake.wait()
                if self._closing:
                    break
                job = self._current = self._waiting.popleft()
            if not job.cancelled:
                job.resolve(self._call(job))
            self._current = None
        closed = ModelCallError("the embedded model was closed before the call finished", retryable=False)
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            job.resolve(closed)

    def _call(self, job: Job) -> Completion | ModelCallError:
        request, llama = job.request, self.llama
        params = {key: job.params[key] for key in SAMPLING_KEYS if job.params.get(key) is not None}
        if request.json_schema is not None:
            params["grammar"] = schema_grammar(json.dumps(request.json_schema, sort_keys=True))
        llama.reset()
        try:
            if request.prompt is not None:
                out: Any = llama.create_completion(prompt=request.prompt, **params)
                text = out["choices"][0]["text"]
            else:
                out = llama.create_chat_completion(messages=list(request.messages or ()), **params)
                text = out["choices"][0]["message"]["content"]
        except Exception as error:  # too long a prompt, a grammar llama.cpp refuses: this request's failure
            return ModelCallError(f"embedded model refused the request: {error}", retryable=False)
        usage = out["usage"]
        self.stats.prompts += 1
        self.stats.steps += usage["completion_tokens"]
        self.stats.tokens += usage["completion_tokens"]
        self.stats.peak = 1
        return Completion(text=text or "", prompt_tokens=usage["prompt_tokens"],
                          completion_tokens=usage["completion_tokens"],
                          finish_reason=out["choices"][0]["finish_reason"], latency=time.monotonic() - job.started)

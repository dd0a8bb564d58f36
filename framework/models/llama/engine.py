"""One loaded GGUF, one dedicated thread, continuous batching of concurrent requests.

Why a thread of its own: llama.cpp (OpenMP) builds a team of worker threads per calling thread, so calls
hopping across `asyncio.to_thread` workers paid for a new team again and again, and queued sync nodes behind
LLM calls. Why batching: on a CPU one decode step of 8 sequences costs little more than a step of one, as
the weights are read once per step; a lock that serialised requests left that on the table.

The thread admits waiting requests as llama.cpp sequences (one KV-cache stream each, `n_seq_max` streams),
then decodes one token of every running sequence per step (`llama_decode` with one seq_id per token), the
prompts of sequences just admitted in the same call as far as they fit in one batch (`n_batch` tokens; a
longer prompt is decoded before the step, alone), picks every sequence's next token from one view of the
step's logits with its own parameters, seed and grammar (`llama_sampling`), and retires a sequence the moment
it stops, freeing its stream for the next request. Its llama.cpp thread count is `cpu_threads`' to decide.

Prompts share the step because, with one KV-cache stream per sequence (`kv_unified` off), a sequence's
logits in this llama.cpp do not depend on what else is in the batch: bit for bit the same, measured with
1 and 2 threads and with two prompts beside a running sequence, and greedy output still equals
`create_chat_completion`'s (tests/test_embedded.py). Sequences with a grammar (JSON schema) are batched
like the others: the grammar is a sampler in their chain, applied to their own row of logits.

What batching cannot buy with the default GGUF (SmolLM2-135M Q4_1): profiled with py-spy, 97-99% of the
engine thread is `llama_decode`, and about 70% of that is `ggml_vec_dot_q4_1_q8_1`, a dot product per
weight row and token, so a step of 8 tokens costs about 8 steps of 1; Python's share (sampling, stops) is
under 1.5%.
"""
from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ModelCallError
from ..base import Completion, LLMRequest
from .sampling import next_tokens
from .sequence import PromptBuilder, Sequence, SequenceSettings
from .threads import default_threads

NEEDS_LLAMA_CPP = "the embedded model needs llama-cpp-python: pip install -e '.[local]'"

N_BATCH = 512  # prompt tokens per decode step (llama-cpp-python's default)


@dataclass
class Job:
    """A request waiting for, or being decoded by, the engine; the answer goes back to `future`."""

    request: LLMRequest
    params: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Completion]
    started: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # set by the caller's task on cancellation; read by the engine thread

    def resolve(self, outcome: Completion | BaseException) -> None:
        def deliver() -> None:
            if self.future.done():
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        try:
            self.loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass


@dataclass
class BatchStats:
    """Sequences decoded together per generation step: what the manifest reports as concurrency."""

    steps: int = 0
    tokens: int = 0
    peak: int = 0
    prompts: int = 0
    prompts_beside_tokens: int = 0  # prompts decoded in the same step as running sequences' tokens

    def record(self, width: int) -> None:
        self.steps += 1
        self.tokens += width
        self.peak = max(self.peak, width)

    def summary(self, slots: int, threads: int | None) -> dict[str, Any]:
        return {"slots": slots, "peak": self.peak, "mean": round(self.tokens / self.steps, 2) if self.steps else 0.0,
                "steps": self.steps, "prompts": self.prompts, "prompts_beside_tokens": self.prompts_beside_tokens,
                "threads": threads}


class EngineThread(ABC):
    """A loaded model on a thread of its own, fed `Job`s from the event loop: the queue, the start and the
    stop that every way of decoding shares. A subclass loads the model (`_load`), serves the queue until
    `_closing` (`_loop`), frees the model (`_free`) and names the jobs it is decoding (`_in_flight`)."""

    api = "batched"  # how it decodes, for the manifest's `concurrency` figures

    def __init__(self, path: Path, n_ctx: int, slots: int, threads: int | None = None):
        self.path, self.n_ctx, self.slots = path, n_ctx, slots
        self.threads = threads  # None: measured by `default_threads()` when the model loads
        self.stats = BatchStats()
        self._waiting: deque[Job] = deque()
        self._error: Exception | None = None  # why the engine stopped, told to later callers
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._main, name=f"llama:{path.name}", daemon=True)
        self._thread.start()

    # -- the caller's side (event loop thread) ---------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._error is not None:
                raise self._error
            if self._closing:
                raise ModelCallError("the embedded model is closed", retryable=False)
            self._waiting.append(job)
            self._wake.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread (requests still running fail) and free the model; blocks until it has stopped."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the engine thread --------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            if not self.path.exists():
                raise ConfigError(f"model file {self.path} does not exist")
            if self.threads is None:
                self.threads = default_threads()
            self._load()
            self._loop()
        except ConfigError as error:  # no llama-cpp-python, no model file: the user's to fix
            self._fail_all(error)
        except Exception as error:  # a llama.cpp failure must not leave callers waiting forever
            self._fail_all(ModelCallError(f"embedded model failed: {error}", retryable=False))
        finally:
            self._free()

    @abstractmethod
    def _load(self) -> None:
        """Load the model on the engine thread (`path` exists, `threads` is set)."""

    @abstractmethod
    def _loop(self) -> None:
        """Serve submitted jobs until `close()`."""

    @abstractmethod
    def _free(self) -> None:
        """Release what `_load` took (called even when it failed)."""

    @abstractmethod
    def _in_flight(self) -> list[Job]:
        """The jobs being decoded now, taken out of the engine (to fail them on close or error)."""

    def _fail_all(self, error: Exception) -> None:
        with self._wake:
            self._error = error
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting + self._in_flight():
            job.resolve(error)


class LlamaEngine(EngineThread):
    """Owns the llama.cpp model and context through llama-cpp-python's private API (`_internals`, the batch
    API) and decodes up to `slots` requests together; everything touching them runs on its one thread."""

    def __init__(self, path: Path, n_ctx: int, slots: int, threads: int | None = None):
        self._running: dict[int, tuple[Job, Sequence]] = {}
        super().__init__(path, n_ctx, slots, threads)

    def _in_flight(self) -> list[Job]:
        jobs = [job for job, _ in self._running.values()]
        self._running.clear()
        return jobs

    def _load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp._internals import LlamaContext, LlamaModel
            from llama_cpp._logger import set_verbose
            from llama_cpp._utils import suppress_stdout_stderr
        except ImportError:
            raise ConfigError(NEEDS_LLAMA_CPP) from None
        self._llama_cpp = llama_cpp
        set_verbose(False)  # llama.cpp's load-time chatter; errors still show
        llama_cpp.llama_backend_init()
        self.model = LlamaModel(path_model=str(self.path), params=llama_cpp.llama_model_default_params(),
                                verbose=False)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * self.slots  # one stream of n_ctx cells per sequence
        params.n_seq_max = self.slots
        params.kv_unified = False
        params.n_batch = params.n_ubatch = min(N_BATCH, self.n_ctx)
        params.n_threads = params.n_threads_batch = self.threads
        with suppress_stdout_stderr(disable=False):  # "n_ctx_per_seq < n_ctx_train": a warning for every run
            self.context = LlamaContext(model=self.model, params=params, verbose=False)
        self.batch = llama_cpp.llama_batch_init(max(params.n_batch, self.slots), 0, 1)
        self.builder = PromptBuilder(self.model)
        self.n_vocab = self.model.n_vocab()
        self._piece = ctypes.create_string_buffer(64)

    def _free(self) -> None:
        for name in ("context", "model"):
            resource = getattr(self, name, None)
            if resource is not None:
                resource.close()
        if getattr(self, "batch", None) is not None:
            self._llama_cpp.llama_batch_free(self.batch)
            self.batch = None

    def _loop(self) -> None:
        running = self._running
        free_ids = list(range(self.slots - 1, -1, -1))
        while True:
            with self._wake:
                while not self._waiting and not running and not self._closing:
                    self._wake.wait()
                if self._closing:
                    waiting, self._waiting = list(self._waiting), deque()
                    break
                admitted = []
                while self._waiting and free_ids:
                    admitted.append((free_ids.pop(), self._waiting.popleft()))
            for seq_id, job in admitted:
                started = self._admit(job)
                if started is None:
                    free_ids.append(seq_id)
                else:
                    running[seq_id] = (job, started)  # its prompt goes into the next step
            for seq_id in [seq_id for seq_id, (job, _) in running.items() if job.cancelled]:
                self._release(seq_id, running, free_ids)
            try:
                finished = self._step(running)
            except RuntimeError as error:  # the step failed for all of them; the next requests may fare better
                for seq_id in list(running):
                    running[seq_id][0].resolve(ModelCallError(f"embedded model failed: {error}", retryable=False))
                    self._release(seq_id, running, free_ids)
                continue
            for seq_id in finished:
                job, sequence = running[seq_id]
                job.resolve(self._completion(job, sequence))
                self._release(seq_id, running, free_ids)
        closed = ModelCallError("the embedded model was closed before the call finished", retryable=False)
        for job in waiting + [job for job, _ in running.values()]:
            job.resolve(closed)

    def _admit(self, job: Job) -> Sequence | None:
        """A new request as a sequence with its prompt tokens and sampler; None if it is already over
        (cancelled, or refused: too long a prompt, a grammar llama.cpp will not compile)."""
        if job.cancelled:
            return None
        try:
            settings = SequenceSettings.from_request(job.request, job.params, self.builder, self.n_ctx)
            return Sequence.start(settings, self.model)
        except Exception as error:
            job.resolve(error if isinstance(error, ModelCallError)
                        else ModelCallError(f"embedded model refused the request: {error}", retryable=False))
            return None

    def _step(self, running: dict[int, tuple[Job, Sequence]]) -> list[int]:
        """One llama_decode: the last token of every running sequence, and the prompts of sequences just
        admitted, as far as they fit in one batch; then every sequence's next token (a new one's first).
        Returns the ids of the sequences now finished. A prompt that does not fit is decoded before, alone."""
        starting = [seq_id for seq_id, (_, sequence) in running.items() if not sequence.tokens]
        budget = self.context.params.n_batch - len(running)  # a row for each sequence's next token
        together, finished = [], []
        for seq_id in starting:
            size = len(running[seq_id][1].settings.prompt_tokens)
            if size - 1 <= budget:  # its last prompt token takes the row kept for it
                together.append(seq_id)
                budget -= size - 1
            elif self._prefill_alone(seq_id, running[seq_id][1]):
                finished.append(seq_id)
        decoding = [seq_id for seq_id in running if seq_id not in together and seq_id not in finished]
        rows = 0
        for seq_id in decoding:
            sequence = running[seq_id][1]
            self._put(rows, sequence.tokens[-1], sequence.position, seq_id, True)
            sequence.position += 1
            rows += 1
        for seq_id in together:
            tokens = running[seq_id][1].settings.prompt_tokens
            for position, token in enumerate(tokens):
                self._put(rows, token, position, seq_id, position == len(tokens) - 1)
                rows += 1
            running[seq_id][1].position = len(tokens)
        if not rows:
            return finished
        self._decode(rows, None)
        self.stats.prompts += len(together)
        if decoding:
            self.stats.record(len(decoding))
            self.stats.prompts_beside_tokens += len(together)
        order = decoding + together  # the order of the output rows
        sequences = [running[seq_id][1] for seq_id in order]
        tokens = self._next_tokens(len(order), sequences)
        return finished + [seq_id for seq_id, sequence, token in zip(order, sequences, tokens, strict=True)
                           if self._advance(sequence, token)]

    def _prefill_alone(self, seq_id: int, sequence: Sequence) -> bool:
        """Decode a prompt too long to share the step, in chunks of its own, and sample its first token;
        True when that token already ends it."""
        tokens = sequence.settings.prompt_tokens
        size = self.context.params.n_batch
        for begin in range(0, len(tokens), size):
            chunk = tokens[begin:begin + size]
            for row, token in enumerate(chunk):
                self._put(row, token, begin + row, seq_id, begin + row == len(tokens) - 1)
            self._decode(len(chunk), seq_id)
        self.stats.prompts += 1
        sequence.position = len(tokens)
        return self._advance(sequence, self._next_tokens(1, [sequence])[0])

    def _next_tokens(self, rows: int, sequences: list[Sequence]) -> list[int]:
        """The token each sequence samples from the last decode's output rows (the i-th sequence, the i-th row)."""
        return next_tokens(self._llama_cpp, self.context.ctx, rows, self.n_vocab, list(enumerate(sequences)))

    def _advance(self, sequence: Sequence, token: int) -> bool:
        """Give the sequence its sampled token; True when it is done."""
        llama_cpp = self._llama_cpp
        vocab = self.model.vocab
        if llama_cpp.llama_token_is_eog(vocab, token):
            return sequence.accept(token, b"", True)
        length = llama_cpp.llama_token_to_piece(vocab, token, self._piece, len(self._piece), 0, False)
        done = sequence.accept(token, self._piece.raw[:length], False)
        if not done and sequence.position >= self.n_ctx:  # only past max_tokens, inside a character
            sequence.finish_reason, sequence.result = "length", sequence.text
            return True
        return done

    def _put(self, row: int, token: int, position: int, seq_id: int, logits: bool) -> None:
        batch = self.batch
        batch.token[row] = token
        batch.pos[row] = position
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = seq_id
        batch.logits[row] = logits

    def _decode(self, rows: int, seq_id: int | None) -> None:
        self.batch.n_tokens = rows
        status = self._llama_cpp.llama_decode(self.context.ctx, self.batch)
        if status != 0:
            where = f"sequence {seq_id}" if seq_id is not None else f"a step of {rows} sequences"
            raise RuntimeError(f"llama_decode returned {status} for {where}")

    def _completion(self, job: Job, sequence: Sequence) -> Completion:
        return Completion(text=sequence.reply(), prompt_tokens=len(sequence.settings.prompt_tokens),
                          completion_tokens=len(sequence.tokens), finish_reason=sequence.finish_reason,
                          latency=time.monotonic() - job.started)

    def _release(self, seq_id: int, running: dict[int, tuple[Job, Sequence]], free_ids: list[int]) -> None:
        _, sequence = running.pop(seq_id)
        self._forget(seq_id, sequence)
        free_ids.append(seq_id)

    def _forget(self, seq_id: int, sequence: Sequence) -> None:
        self._llama_cpp.llama_memory_seq_rm(self.context.memory, seq_id, -1, -1)
        sequence.close()

"""The next token of every sequence of a decode step, read from one numpy view of llama.cpp's logits.

Why not `llama_sampler_sample` per sequence: it copies the whole vocabulary (49,152 entries for SmolLM2)
into a candidate array for every sequence and every token, then the repeat penalty looks each of them up in
a hash map, and top-k sorts them all: about 0.5 ms of one core per sequence per token, while the decode step
itself costs 2-9 ms a sequence. Here the logits stay where llama.cpp wrote them:

- the repeat/frequency/presence penalties are applied in place, to the few tokens of each sequence's last 64
  (the arithmetic of llama.cpp's penalties sampler, in float32, in the same order: penalties come first in
  llama-cpp-python's chain);
- greedy sequences take the first maximum of their row (what llama.cpp's greedy sampler takes);
- top-k sequences (0 < top_k < vocabulary) hand llama.cpp only their k best candidates, sorted as its top-k
  sampler leaves them, and the rest of their chain (typical, top-p, min-p, temperature, their seeded
  distribution) runs unchanged on those k, so a seed gives the same text as `create_chat_completion`;
- anything else (a grammar, top_k 0, a negative temperature) runs its chain on the full row through
  `llama_sampler_sample`, which also advances its grammar.

Ties between equal logits are ordered by token id in the top-k hand-over, where llama.cpp's partial sort
leaves them in no defined order; only a tie at the k-th place or a draw between tied tokens could tell.
"""
from __future__ import annotations

import ctypes
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

PENALTY_LAST_N = 64  # llama-cpp-python's `last_n_tokens_size` default
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


@dataclass
class Penalties:
    """A sequence's last PENALTY_LAST_N sampled tokens and how llama.cpp's penalties sampler weighs them."""

    repeat: float
    frequency: float
    presence: float
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=PENALTY_LAST_N))
    counts: Counter[int] = field(default_factory=Counter)

    @property
    def active(self) -> bool:
        return bool(self.counts) and (self.repeat != 1.0 or self.frequency != 0.0 or self.presence != 0.0)

    def accept(self, token: int) -> None:
        if len(self.recent) == self.recent.maxlen:
            oldest = self.recent[0]
            self.counts[oldest] -= 1
            if not self.counts[oldest]:
                del self.counts[oldest]
        self.recent.append(token)
        self.counts[token] += 1

    def apply(self, row: npt.NDArray[np.float32]) -> None:
        """llama_sampler_penalties_apply on one row of logits, in place."""
        ids = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
        counts = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
        logits = row[ids]
        logits = np.where(logits <= 0, logits * np.float32(self.repeat), logits / np.float32(self.repeat))
        logits -= counts * np.float32(self.frequency) + np.float32(1.0) * np.float32(self.presence)
        row[ids] = logits


def next_tokens(llama_cpp: Any, context: Any, rows: int, n_vocab: int,
                choosers: list[tuple[int, Any]]) -> list[int]:
    """The token each (logits row, sequence) pair samples from the last decode's `rows` output rows.
    A sequence here is anything with `penalties`, `mode`, `top_k` and `sampler` (see `llama_sequence`)."""
    pointer = llama_cpp.llama_get_logits(context)
    logits = np.ctypeslib.as_array(pointer, shape=(rows, n_vocab))
    for row, sequence in choosers:
        if sequence.penalties.active:
            sequence.penalties.apply(logits[row])
    tokens = []
    for row, sequence in choosers:
        if sequence.mode == "greedy":
            token = int(logits[row].argmax())
        elif sequence.mode == "top_k":
            token = _top_k_then_chain(llama_cpp, logits[row], sequence.top_k, sequence.sampler)
        else:
            token = llama_cpp.llama_sampler_sample(sequence.sampler.sampler, context, row - rows)  # by output
        sequence.penalties.accept(token)
        tokens.append(token)
    return tokens


def _top_k_then_chain(llama_cpp: Any, row: npt.NDArray[np.float32], k: int, sampler: Any) -> int:
    top = np.argpartition(row, row.size - k)[row.size - k:]
    values = row[top]
    order = np.lexsort((top, -values))  # by logit, highest first; equal logits by token id
    candidates = np.zeros(k, dtype=TOKEN_DATA)
    candidates["id"], candidates["logit"] = top[order], values[order]
    array = llama_cpp.llama_token_data_array(
        data=candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=k, selected=-1, sorted=True)
    llama_cpp.llama_sampler_apply(sampler.sampler, ctypes.byref(array))
    if not 0 <= array.selected < array.size:
        raise RuntimeError("llama.cpp's sampler chain selected no token")
    return int(candidates["id"][array.selected])

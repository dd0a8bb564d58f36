"""One request as a llama.cpp sequence: its prompt tokens, its own sampler chain, and the stop logic.

Everything here mirrors what llama-cpp-python's `create_chat_completion` / `create_completion` do for one
request (the GGUF's chat template, the sampler chain of `Llama._init_sampler`, the stop-string and
multi-byte checks of `Llama._create_completion`), so that a request decoded beside others in a batch gives
the same text as the same request sent to `create_chat_completion` alone. Only the decoding loop differs:
the engine (`llama_engine`) feeds the sequence one token per step and asks it what comes next.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ...errors import ModelCallError
from ..base import LLMRequest
from .sampling import Penalties

_UTF8_LEADS = ((2, 192), (3, 224), (4, 240))
# create_chat_completion's and create_completion's own defaults where a request leaves a parameter out.
_CHAT_DEFAULTS = {"temperature": 0.2, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
                  "presence_penalty": 0.0, "frequency_penalty": 0.0}
_COMPLETION_DEFAULTS = {**_CHAT_DEFAULTS, "temperature": 0.8}


class PromptBuilder:
    """Turns a request into prompt tokens and stop strings the way `create_chat_completion` would.

    The chat format is chosen as `Llama.__init__` chooses it: a known template by name, else the GGUF's own
    Jinja template (rendered in Jinja's sandbox), else llama-2."""

    def __init__(self, model: Any):
        from llama_cpp import llama_chat_format

        self.model = model
        metadata = model.metadata()
        eos, bos = model.token_eos(), model.token_bos()
        template = metadata.get("tokenizer.chat_template")
        named = {"chatml": llama_chat_format.format_chatml, "llama-3": llama_chat_format.format_llama3,
                 "mistral-instruct": llama_chat_format.format_mistral_instruct}
        guessed = llama_chat_format.guess_chat_format_from_gguf_metadata(metadata) if template else None
        if guessed in named:
            self.formatter: Any = named[guessed]
        elif template:
            self.formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])
        else:
            self.formatter = llama_chat_format.format_llama2

    def chat(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        result = self.formatter(messages=messages)
        tokens = self.model.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return tokens, stops

    def raw(self, prompt: str) -> list[int]:
        """A raw prompt tokenized with the BOS/EOS rules of `create_completion` for a string prompt."""
        model = self.model
        cls, sep, bos = model.token_cls(), model.token_sep(), model.token_bos()
        first = cls if cls != -1 else bos
        head = [first] if model.add_bos_token() and first != -1 else []
        tail = [sep if sep != -1 else model.token_eos()] if model.add_eos_token() or sep != -1 else []
        body = model.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) if prompt else []
        return [*head, *body, *tail]

    def grammar(self, schema: dict[str, Any]) -> Any:
        return schema_grammar(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=64)
def schema_grammar(schema: str) -> Any:
    """A llama.cpp grammar (public `LlamaGrammar`) for a JSON schema given as JSON text, cached; plain JSON if
    the schema will not convert, as llama-cpp-python does for `response_format: json_object`."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(schema, verbose=False)
    except Exception:  # the converter raises plain exceptions on schemas it cannot express
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


@dataclass
class SequenceSettings:
    """What one request asks of the decoder, resolved from its parameters."""

    prompt_tokens: list[int]
    stops: list[bytes]
    max_tokens: int
    sampling: dict[str, float]
    seed: int
    grammar: Any = None

    @classmethod
    def from_request(cls, request: LLMRequest, params: dict[str, Any], builder: PromptBuilder,
                     n_ctx: int) -> SequenceSettings:
        template_stops: list[str] = []
        if request.prompt is not None:
            tokens, defaults = builder.raw(request.prompt), _COMPLETION_DEFAULTS
        else:
            tokens, template_stops = builder.chat(list(request.messages or ()))
            defaults = _CHAT_DEFAULTS
        if not tokens:
            raise ModelCallError("the prompt is empty", retryable=False)
        if len(tokens) >= n_ctx:
            raise ModelCallError(f"Requested tokens ({len(tokens)}) exceed context window of {n_ctx}",
                                 retryable=False)
        stop = params.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = params.get("max_tokens")
        if max_tokens is None or max_tokens <= 0:
            max_tokens = n_ctx - len(tokens)
        max_tokens = min(int(max_tokens), n_ctx - len(tokens))
        sampling = {key: float(params[key]) if params.get(key) is not None else value
                    for key, value in defaults.items()}
        grammar = builder.grammar(request.json_schema) if request.json_schema is not None else None
        return cls(prompt_tokens=tokens, stops=[s.encode("utf-8") for s in [*stops, *template_stops]],
                   max_tokens=max_tokens, sampling=sampling, seed=int(params.get("seed") or 0) & 0xFFFFFFFF,
                   grammar=grammar)


def build_sampler(settings: SequenceSettings, model: Any) -> tuple[str, int, Any]:
    """How the sequence picks its tokens: (mode, top_k, sampler chain). The chain is the one `Llama._init_sampler`
    builds for these settings (no mirostat, no logit bias) less its penalties, which `llama_sampling` applies
    to the logits first, and, in mode "top_k", less its top-k, which `llama_sampling` does over the logits
    (the chain then starts at typical-p). Mode "greedy" has no chain: the first maximum is the token."""
    import llama_cpp
    from llama_cpp import _internals

    sampling = settings.sampling
    temperature, top_k = sampling["temperature"], int(sampling["top_k"])
    if settings.grammar is None and temperature == 0.0:
        return "greedy", 0, None
    mode = "top_k" if settings.grammar is None and temperature > 0.0 and 0 < top_k < model.n_vocab() else "chain"
    sampler_type: Any = _internals.LlamaSampler  # untyped in llama-cpp-python
    sampler = sampler_type()
    if settings.grammar is not None:
        grammar = llama_cpp.llama_sampler_init_grammar(
            model.vocab, settings.grammar._grammar.encode("utf-8"), settings.grammar._root.encode("utf-8"))
        if not grammar:
            sampler.close()
            raise ModelCallError("llama.cpp could not compile the grammar for this JSON schema", retryable=False)
        llama_cpp.llama_sampler_chain_add(sampler.sampler, grammar)
    if temperature < 0.0:
        sampler.add_softmax()
        sampler.add_dist(settings.seed)
    elif temperature == 0.0:
        sampler.add_greedy()
    else:
        if mode == "chain":
            sampler.add_top_k(top_k)
        sampler.add_typical(1.0, 1)
        sampler.add_top_p(sampling["top_p"], 1)
        sampler.add_min_p(sampling["min_p"], 1)
        sampler.add_temp(temperature)
        sampler.add_dist(settings.seed)
    return mode, top_k, sampler


@dataclass
class Sequence:
    """A request being decoded. `accept` takes each sampled token and says whether the sequence is done;
    the checks and their order are `Llama._create_completion`'s, so the text and finish reason match."""

    settings: SequenceSettings
    mode: str  # how `llama_sampling` picks its tokens: "greedy", "top_k" or "chain"
    top_k: int
    sampler: Any  # its llama.cpp sampler chain; None when greedy
    penalties: Penalties
    tokens: list[int] = field(default_factory=list)
    position: int = 0  # where its next token goes in its KV-cache stream
    text: bytes = b""
    result: bytes | None = None
    finish_reason: str = "length"
    _pending_multibyte: int = 0

    def accept(self, token: int, piece: bytes, end_of_generation: bool) -> bool:
        if end_of_generation:
            self._finish(self.text, "stop")
            return True
        self.tokens.append(token)
        self.text += piece
        for back, byte in enumerate(self.text[-3:]):
            remaining = 3 - back
            for length, pattern in _UTF8_LEADS:
                if length > remaining and pattern & byte == pattern:
                    self._pending_multibyte = length - remaining
        if self._pending_multibyte > 0:  # never cut a character in half (nor stop inside one)
            self._pending_multibyte -= 1
            return False
        found = [stop for stop in self.settings.stops if stop in self.text]
        if found:
            self._finish(self.text[: self.text.index(found[0])], "stop")
            return True
        if len(self.tokens) >= self.settings.max_tokens:
            self._finish(self.text, "length")
            return True
        return False

    @classmethod
    def start(cls, settings: SequenceSettings, model: Any) -> Sequence:
        mode, top_k, sampler = build_sampler(settings, model)
        sampling = settings.sampling
        return cls(settings=settings, mode=mode, top_k=top_k, sampler=sampler, penalties=Penalties(
            sampling["repeat_penalty"], sampling["frequency_penalty"], sampling["presence_penalty"]))

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()

    def _finish(self, text: bytes, reason: str) -> None:
        self.result, self.finish_reason = text, reason

    def reply(self) -> str:
        return (self.result if self.result is not None else self.text).decode("utf-8", errors="ignore")

"""Sampling parameters: one meaning for each name in a graph's `params`, whichever backend runs it.

Servers spell some settings differently: llama.cpp says `repeat_penalty`, vLLM and Hugging Face say
`repetition_penalty`, and a server silently drops a name it does not know. So a graph may use either
spelling of one setting, each backend is sent the name(s) it reads (`SENT_AS`), and a name that is not in
the table is refused when the graph is checked instead of being dropped at run time. Two keys are not
sampling parameters: `engine` (the in-process vLLM engine's settings, backend `vllm` only; never sent over
HTTP) and `extra` (fields an OpenAI-compatible server takes that synthloom does not know, sent as they are).
"""
from __future__ import annotations

from typing import Any, Literal

Backend = Literal["openai", "local", "vllm"]
ENGINE_KEY = "engine"
EXTRA_KEY = "extra"
ALIASES = {"repetition_penalty": "repeat_penalty"}
"""Another spelling -> the name used in this table."""

_EVERYWHERE = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "seed", "presence_penalty",
               "frequency_penalty")
SENT_AS: dict[str, dict[Backend, tuple[str, ...]]] = {
    **{name: {"openai": (name,), "local": (name,), "vllm": (name,)} for name in _EVERYWHERE},
    # an OpenAI-compatible server reads one of the two spellings and ignores the other (OpenAI's own API
    # takes neither and refuses both)
    "repeat_penalty": {"openai": ("repetition_penalty", "repeat_penalty"), "local": ("repeat_penalty",),
                       "vllm": ("repetition_penalty",)},
    "min_tokens": {"openai": ("min_tokens",), "vllm": ("min_tokens",)},
}
"""Each sampling name, and the request field(s) each backend gets it as (a backend missing: not taken)."""

BACKEND_WORDS = {"openai": "an OpenAI-compatible server (backend openai)",
                 "local": "the embedded model (backend local)", "vllm": "the in-process vLLM engine (backend vllm)"}


def params_problem(params: dict[str, Any], backend: Backend) -> tuple[str, str] | None:
    """The first key of `params` that `backend` cannot take, and why with what to do; None if all is well."""
    for key, value in params.items():
        name = ALIASES.get(key, key)
        if key == ENGINE_KEY:
            if backend != "vllm":
                return key, ("params.engine holds the in-process vLLM engine's settings (backend vllm); a "
                             "`vllm serve` server takes them as command-line flags, and they are never sent in a "
                             "request")
            if not isinstance(value, dict):
                return key, "params.engine is a mapping of vLLM engine arguments (e.g. {enforce_eager: true})"
        elif key == EXTRA_KEY:
            if backend != "openai":
                return key, (f"params.extra holds fields sent as they are to an OpenAI-compatible server "
                             f"(backend openai); {BACKEND_WORDS[backend]} has no request body")
            if not isinstance(value, dict):
                return key, "params.extra is a mapping of request fields sent as they are"
        elif name not in SENT_AS:
            known = ", ".join(sorted({*SENT_AS, *ALIASES}))
            return key, (f"unknown sampling parameter '{key}' (known: {known}); a field only your server "
                         f"knows goes under params.extra")
        elif backend not in SENT_AS[name]:
            return key, f"{BACKEND_WORDS[backend]} takes no '{key}'"
        elif name in params and key != name:
            return key, f"'{key}' and '{name}' are two spellings of one setting; keep one"
    return None


def for_backend(params: dict[str, Any], backend: Backend) -> dict[str, Any]:
    """`params` (a model's and a call's, merged) as `backend` takes them: names translated, `engine` left out,
    `extra` spread into an HTTP body. Names the backend does not take are left out (the graph check refused
    them already; this only guards calls made from Python)."""
    sent: dict[str, Any] = {}
    for key, value in params.items():
        if key == EXTRA_KEY and backend == "openai" and isinstance(value, dict):
            sent.update(value)
            continue
        for field in SENT_AS.get(ALIASES.get(key, key), {}).get(backend, ()):
            sent[field] = value
    return sent

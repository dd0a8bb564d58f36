"""Which engine runs the embedded model: the batched one on llama-cpp-python versions the tests pinned, the
public-API one on any other.

Why a gate: the batched engine (`engine`, `sequence`, `sampling`) uses llama-cpp-python's
private API (`llama_cpp._internals`, the grammar's private fields, context parameters of recent releases) and
mirrors its sampler chain and stop logic to give `create_chat_completion`'s text. A release that changes any of
that could fail at import or, worse, change outputs without a word. So only the versions in `TESTED_VERSIONS`
(the ones `tests/test_embedded.py` ran against) get it; any other version gets `public` (unbatched,
public API only), and one log line says which engine was chosen and why. `$SYNTHLOOM_LLAMA_API` overrides
the choice: `public` to compare or to sidestep a problem, `batched` to try a new release at your own risk.
"""
from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Literal

from ...errors import ConfigError
from .engine import EngineThread, LlamaEngine
from .public import PublicLlamaEngine

TESTED_VERSIONS = ("0.3.16",)
"""llama-cpp-python releases the batched engine was tested on (pyproject's `local` extra pins one of them)."""
API_ENV_VAR = "SYNTHLOOM_LLAMA_API"
Api = Literal["batched", "public"]

log = logging.getLogger("synthloom.models")


def installed_version() -> str | None:
    """The installed llama-cpp-python's version, read from its metadata (without importing it); None if absent."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def configured_api(value: str | None) -> Api | None:
    """The engine a value of $SYNTHLOOM_LLAMA_API forces; None to let the version decide. Read when a client
    is made, so a misspelling stops the run before its first record, in one line."""
    choice = (value or "").strip().lower()
    if choice == "batched":
        return "batched"
    if choice == "public":
        return "public"
    if choice not in ("", "auto"):
        raise ConfigError(f"{API_ENV_VAR} must be auto, batched or public (it is {value!r}); "
                          f"unset it to let synthloom choose")
    return None


def choose_api(version: str, forced: Api | None = None) -> tuple[Api, str]:
    """(the engine to run, why) for an installed `version` and what $SYNTHLOOM_LLAMA_API forces."""
    if forced is not None:
        return forced, f"{API_ENV_VAR}={forced}"
    tested = ", ".join(TESTED_VERSIONS)
    if version in TESTED_VERSIONS:
        return "batched", f"llama-cpp-python {version} is a tested version"
    return "public", (f"llama-cpp-python {version} is not a tested version ({tested}); "
                      f"{API_ENV_VAR}=batched tries the batched engine anyway")


def start_engine(path: Path, n_ctx: int, slots: int, threads: int | None, forced: Api | None) -> EngineThread:
    """The engine for one GGUF, started on its thread, after one log line naming the engine and the reason."""
    version = installed_version()
    if version is None:  # the engine's load says what to install
        return LlamaEngine(path, n_ctx, slots, threads)
    api, reason = choose_api(version, forced)
    if api == "batched":
        log.info("embedded model %s: batched engine, up to %d sequences per step (%s)", path.name, slots, reason)
        return LlamaEngine(path, n_ctx, slots, threads)
    log.warning("embedded model %s: llama-cpp-python's public API, one request at a time (%s)", path.name, reason)
    return PublicLlamaEngine(path, n_ctx, slots, threads)

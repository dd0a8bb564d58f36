"""A seam for budgets shared beyond this process.

Each model's `max_concurrency`, `rpm` and `tpm` bound one process. When several processes feed one server
(`synthloom run --ray`), the `ModelPool` also asks a `PermitProvider` before each call that is not
answered from the cache, and gives the permit back with the tokens the call used; under Ray the provider
is the shard's lease of each model's run-wide budget (`synthloom.distributed.actors.RayPermits`), traded with the
run's `PermitBank` as shards start and finish.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .base import Completion, LLMRequest


class PermitProvider(Protocol):
    async def acquire(self, model: str, tokens: int) -> Any:
        """Wait for a slot of `model` (and `tokens` of its TPM, one request of its RPM); returns a ticket."""
        ...

    def release(self, model: str, ticket: Any, used_tokens: int | None) -> None:
        """Give the slot back; `used_tokens` corrects the TPM estimate (None: the call failed)."""
        ...


def estimate_tokens(request: LLMRequest, params: dict[str, Any]) -> int:
    """Chars/4 of the prompt plus max_tokens: what the call may use of a TPM budget, corrected after."""
    text = request.prompt or "".join(str(message.get("content") or "") for message in request.messages or [])
    max_tokens = (request.params or {}).get("max_tokens") or params.get("max_tokens") or 256
    return len(text) // 4 + int(max_tokens)


async def with_permit(permits: PermitProvider, model: str, params: dict[str, Any], request: LLMRequest,
                      call: Callable[[LLMRequest], Awaitable[Completion]]) -> Completion:
    ticket = await permits.acquire(model, estimate_tokens(request, params))
    used: int | None = None
    try:
        completion = await call(request)
        used = completion.prompt_tokens + completion.completion_tokens
        return completion
    finally:
        permits.release(model, ticket, used)

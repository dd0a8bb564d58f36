"""Micro-batching for completions-style servers: prompts from concurrent records that share the same
parameters are coalesced into one /v1/completions request (a prompt list), waiting at most a few
milliseconds for company, and the answers are split back by choice index. `send` may answer each prompt
on its own (a completion or an error apiece), as it does for a server that takes no prompt lists."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import Completion

SendBatch = Callable[[dict[str, Any]], Awaitable[Sequence[Completion | BaseException]]]


@dataclass
class _Pending:
    prompts: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future[Completion]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class MicroBatcher:
    def __init__(self, send: SendBatch, batch_size: int, max_wait_s: float):
        self.send = send
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._pending: dict[str, tuple[dict[str, Any], _Pending]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, body: dict[str, Any]) -> Completion:
        """`body` is a completions request with a single prompt; it may travel with others."""
        shared = {key: value for key, value in body.items() if key != "prompt"}
        group = json.dumps(shared, sort_keys=True, default=str)
        if group not in self._pending:
            self._pending[group] = (shared, _Pending())
        _, pending = self._pending[group]
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        pending.prompts.append(body["prompt"])
        pending.waiters.append(future)
        if len(pending.prompts) >= self.batch_size:
            self._flush(group)
        elif pending.timer is None:
            pending.timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._flush, group)
        return await future

    def _flush(self, group: str) -> None:
        shared, pending = self._pending.pop(group, (None, None))
        if pending is None or shared is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.create_task(self._send(shared, pending))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, shared: dict[str, Any], pending: _Pending) -> None:
        try:
            completions = await self.send({**shared, "prompt": pending.prompts})
        except BaseException as error:  # every waiter learns of the failure; none is left hanging
            for waiter in pending.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        for waiter, completion in zip(pending.waiters, completions, strict=False):  # extra answers: ignored
            if waiter.done():
                continue
            if isinstance(completion, BaseException):
                waiter.set_exception(completion)
            else:
                waiter.set_result(completion)

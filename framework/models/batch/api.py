"""The provider's Batch API over HTTP: upload a JSONL file (`/files`, purpose `batch`), create, retrieve,
list and cancel batches (`/batches`), download output and error files.

Only the wire: which lines go in a batch, and what their answers mean, is `collector.py`'s business.
Transient faults (connection errors, timeouts, 429, 5xx) are retried with backoff, as synchronous calls
are; a batch holds many records' calls, so giving up on a poll early would fail them all.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp

from ...errors import ModelCallError, one_line
from ...fast_json import loads
from ...sandbox.redact import redact_text, redact_url
from ..openai_http import BACKOFF_CAP_S, is_retryable

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""Batch statuses after which nothing changes (`cancelling`, `finalizing` are on the way there)."""


class BatchAPI:
    """One provider's `/files` and `/batches` endpoints under `base_url` (the model's `/v1` URL)."""

    def __init__(self, name: str, base_url: str, headers: dict[str, str], *, timeout: float,
                 max_retries: int, retry_base_delay: float):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.headers = {key: value for key, value in headers.items() if key != "Content-Type"}
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self.headers,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def upload(self, jsonl: bytes, filename: str) -> str:
        """The id of a new input file holding `jsonl` (one request per line)."""
        def form() -> aiohttp.FormData:  # a FormData is spent once sent: a new one per attempt
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field("file", jsonl, filename=filename, content_type="application/jsonl")
            return data
        answer = await self._call("POST", "/files", form=form)
        return str(answer["id"])

    async def create(self, input_file_id: str, endpoint: str, completion_window: str,
                     metadata: dict[str, str]) -> dict[str, Any]:
        batch: dict[str, Any] = await self._call("POST", "/batches", json={
            "input_file_id": input_file_id, "endpoint": endpoint, "completion_window": completion_window,
            "metadata": metadata})
        return batch

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch: dict[str, Any] = await self._call("GET", f"/batches/{batch_id}")
        return batch

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        batch: dict[str, Any] = await self._call("POST", f"/batches/{batch_id}/cancel")
        return batch

    async def find_by_input_file(self, input_file_id: str, pages: int = 20) -> dict[str, Any] | None:
        """The batch made from `input_file_id`, if one was: a run killed between creating a batch and
        writing its id down finds it here instead of creating a second one (and paying twice)."""
        after: str | None = None
        for _ in range(pages):
            answer = await self._call("GET", "/batches", params={"limit": "100", **({"after": after} if after else {})})
            batches = answer.get("data") or []
            for batch in batches:
                if isinstance(batch, dict) and batch.get("input_file_id") == input_file_id:
                    return batch
            if not answer.get("has_more") or not batches:
                return None
            after = str(batches[-1].get("id"))
        return None

    async def content(self, file_id: str) -> bytes:
        """An output or error file, as JSONL bytes."""
        content: bytes = await self._call("GET", f"/files/{file_id}/content", raw=True)
        return content

    async def _call(self, method: str, path: str, *, json: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None, form: Any = None, raw: bool = False) -> Any:
        url = self.base_url + path
        shown = redact_url(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, url, shown, json=json, params=params,
                                        data=form() if form else None, raw=raw)
            except ModelCallError as error:
                if not error.retryable or attempt > self.max_retries:
                    error.attempts = attempt
                    raise
                delay = error.retry_after if error.retry_after is not None else \
                    self.retry_base_delay * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.0)
                await asyncio.sleep(min(BACKOFF_CAP_S, delay))

    async def _once(self, method: str, url: str, shown: str, *, json: dict[str, Any] | None,
                    params: dict[str, str] | None, data: Any, raw: bool) -> Any:
        try:
            async with self._http().request(method, url, json=json, params=params, data=data) as response:
                body = await response.read()
                if response.status != 200:
                    text = body.decode("utf-8", "replace")
                    raise ModelCallError(f"{self.name}: HTTP {response.status} from {method} {shown}: "
                                         f"{one_line(text, 300)}", retryable=is_retryable(response.status),
                                         status=response.status, overload=response.status == 429)
        except TimeoutError:
            raise ModelCallError(f"{self.name}: no answer from {method} {shown} within {self.timeout:g}s",
                                 retryable=True) from None
        except aiohttp.ClientError as error:
            raise ModelCallError(f"{self.name}: cannot reach {shown}: {redact_text(str(error))}",
                                 retryable=True) from None
        if raw:
            return body
        try:
            answer = loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ModelCallError(f"{self.name}: HTTP 200 from {method} {shown} with a body that is not a JSON "
                                 f"object: {body[:120]!r}", retryable=True, status=200)
        return answer

"""A model whose calls go through the provider's Batch API: one more `ModelClient`, chosen in `clients.py`
for a `batch:` model of a run.

Each call is a line whose `custom_id` is derived from its record and content: the SHA-256 of the record id
(record ids are stable across resumed parts), the sample index (`n` samples of one prompt are n calls even
without a seed), the endpoint and the request body (model, messages or
prompt, parameters with the seed, the schema in the model's structured-output mode), then `-<attempt>`. So
the same call of a resumed run has the same `custom_id`, finds the batch that carried it in the run's
ledger, and waits for that answer instead of being sent (and paid for) again. Identical requests of two
records are one line: the model pool lets the second wait for the first's answer, as it does synchronously
(the response cache's rule: one request, one answer; with `--no-cache`, two lines, as two calls); `n`
samples are n lines.

An answer line is read as a synchronous reply would be, and fails or is retried by the same rules: a
transient status (429, 5xx) or a malformed reply is sent again in a later batch as attempt n+1, up to
`max_retries`, counted per call over every part of the run: a resumed call finds attempt 0's line in the
ledger, reads its answer again from the batch that carried it (while the provider holds that batch's
output file), then attempt 1's, and so is sent again only from the first attempt no batch carried. A
refusal naming a structured-output field steps the model down its ladder; another 4xx fails the record at
once. The request bodies are built by the model's synchronous client, which also serves `preview` (no
run directory, so no batches).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from ...config.schema import ModelConfig
from ...errors import ModelCallError, one_line
from ...fast_json import dumps
from ..base import Completion, LLMRequest, call_owner
from ..openai_http import OpenAIClient, RequestRefused, _parse_choices, is_retryable
from ..structured_modes import fields_named, mode_of
from .api import BatchAPI
from .collector import BatchCollector, Line

log = logging.getLogger("synthloom.models")


def custom_id(owner: str, sample: int, endpoint: str, body: dict[str, Any], attempt: int) -> str:
    """What a line is called at the provider and in the ledger: the hash of its record, sample index and
    content, and its attempt."""
    digest = hashlib.sha256(f"{owner}\n{sample}\n{endpoint}\n".encode() + dumps(body)).hexdigest()
    return f"{digest[:40]}-{attempt}"


class BatchClient:
    def __init__(self, name: str, config: ModelConfig, run_dir: Path, *, retry_base_delay: float = 0.5,
                 cancel_on_close: bool = False):
        assert config.batch is not None
        self.name = name
        self.config = config
        self.sync = OpenAIClient(name, config, retry_base_delay=retry_base_delay)
        self.structured = self.sync.structured
        self.cancel_on_close = cancel_on_close
        self.api = BatchAPI(name, config.urls()[0], self.sync._headers, timeout=config.timeout,
                            max_retries=config.max_retries, retry_base_delay=retry_base_delay)
        self.collector = BatchCollector(name, config.batch, self.api, run_dir, max_rounds=config.max_retries + 1)
        self.left_running: list[str] = []

    async def name_the_model(self) -> None:
        await self.sync.name_the_model()

    async def complete(self, request: LLMRequest) -> Completion:
        started = time.monotonic()
        self.structured.used |= request.json_schema is not None
        attempt = 0
        while True:
            path, body = self.sync.payload(request)
            endpoint = "/v1" + path
            try:
                completion = _completion(self.name, await self.collector.answer(
                    custom_id(call_owner.get(), request.sample, endpoint, body, attempt), endpoint, body), body)
                break
            except RequestRefused as error:
                if request.json_schema is None or \
                        not self.structured.refused(mode_of(error.body), error.fields, str(error)):
                    error.attempts = attempt + 1
                    raise
            except ModelCallError as error:
                if not error.retryable or attempt >= self.config.max_retries:
                    error.attempts = attempt + 1
                    raise
            attempt += 1
        completion.attempts = attempt + 1
        completion.latency = time.monotonic() - started
        completion.batched = True
        if request.json_schema is not None:
            self.structured.reply_seen(completion.text, completion.finish_reason, request.json_schema)
        return completion

    def batch_status(self) -> dict[str, Any]:
        return {**self.collector.status(), **({"left_running": self.left_running} if self.left_running else {})}

    async def close(self) -> None:
        """Batches still pending are left running (paid for; `--resume` collects them), or cancelled with
        `--cancel-batches`."""
        self.left_running = await self.collector.close(cancel=self.cancel_on_close)
        if self.left_running:
            log.warning("model '%s': %d batch(es) left running at the provider (%s); run again with --resume "
                        "to collect their answers, or add --cancel-batches to cancel them when stopping",
                        self.name, len(self.left_running), ", ".join(self.left_running[:5]))
        await self.sync.close()


def _completion(name: str, line: Line, body: dict[str, Any]) -> Completion:
    """An answer line as a synchronous reply would be read, or the error a synchronous call would raise."""
    where = f"{name} (batch line {line.get('custom_id')})"
    response = line.get("response")
    if isinstance(response, dict):
        status = response.get("status_code")
        data = response.get("body")
        if status == 200 and isinstance(data, dict):
            return _parse_choices(data, where, expected=1)[0]
        status = status if isinstance(status, int) else 500
        message = _message(data)
        fields = fields_named(message, body) if 400 <= status <= 599 else frozenset()
        described = f"{where}: HTTP {status}: {message}"
        if fields and not is_retryable(status, fields):
            raise RequestRefused(described, status=status, fields=fields, body=body)
        raise ModelCallError(described, retryable=is_retryable(status, fields), status=status)
    error = line.get("error")
    raise ModelCallError(f"{where}: {one_line(_message(error), 300)}", retryable=False)


def _message(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error", data)
        return str(error.get("message") if isinstance(error, dict) else error)[:300]
    return str(data)[:300]

"""A client for any OpenAI-compatible server (vLLM, llama.cpp server, TGI, Ollama, OpenAI) over aiohttp.

One pooled session per client; calls pass, in order: the adaptive concurrency limiter, the RPM/TPM
buckets, the replica chooser, then HTTP. Transient faults (connection errors, timeouts, 408, 429, 5xx) are
retried with exponential backoff and jitter, honouring Retry-After; other 4xx, and a 5xx that names a
field of the request (a server refusing what it was asked, not a server in trouble), fail at once with the
server's own message. What a server refuses is learnt once per model: structured output steps down its
ladder (`structured_modes`), and a server that takes no prompt lists gets single prompts.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from ..config.sampling import for_backend
from ..config.schema import ModelConfig
from ..errors import ConfigError, ModelCallError, one_line
from ..fast_json import dumps, loads
from ..sandbox.redact import redact_text, redact_url
from .base import Completion, LLMRequest
from .batcher import MicroBatcher
from .limits import AdaptiveLimiter, TokenBucket
from .replicas import ReplicaSet
from .structured_modes import FIELD, StructuredLadder, apply_mode, fields_named, mode_of

RETRYABLE_STATUS = {408, 409, 425, 429}
"""Besides these, every 5xx (500-599, Cloudflare's 520-524 and 529 among them) is retried."""
OVERLOAD_STATUS = {429}
"""With timeouts, the only signals that the server is full; they cut adaptive concurrency."""
BACKOFF_CAP_S = 30.0
LIST_REFUSAL_STATUS = {400, 422, 500, 501}
"""How a server that takes no prompt lists answers one (llama-cpp-python: a bare 500)."""

log = logging.getLogger("synthloom.models")


def is_retryable(status: int, fields: frozenset[str] = frozenset()) -> bool:
    """429s, timeout-like 4xx and every 5xx, except a 500/501 naming a request field: that is a refusal
    (llama-cpp-python answers an unsupported `response_format` with a 500) and would fail again. 502-504
    come from gateways and busy servers whatever they say, and stay retried."""
    return status in RETRYABLE_STATUS or (500 <= status <= 599 and not (fields and status in (500, 501)))


class RequestRefused(ModelCallError):
    """The server refused a request naming some of its fields (`fields`)."""

    def __init__(self, message: str, *, status: int, fields: frozenset[str], body: dict[str, Any]):
        super().__init__(message, retryable=False, status=status)
        self.fields = fields
        self.body = body


class OpenAIClient:
    def __init__(self, name: str, config: ModelConfig, *, retry_base_delay: float = 0.5):
        self.name = name
        self.config = config
        self.limiter = AdaptiveLimiter(config.max_concurrency, adaptive=config.adaptive)
        self.replicas = ReplicaSet(config.urls())
        self.rpm = TokenBucket(config.rpm) if config.rpm else None
        self.tpm = TokenBucket(config.tpm) if config.tpm else None
        self.retry_base_delay = retry_base_delay
        self._headers = {"Content-Type": "application/json"}
        self._secret: str | None = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(f"environment variable {config.api_key_env} is not set; export it with "
                                  f"the API key", key=f"models.{name}.api_key_env")
            self._headers["Authorization"] = f"Bearer {key}"
            self._secret = key
        self._session: aiohttp.ClientSession | None = None
        self.structured = StructuredLadder(name, config.structured)
        self.batcher = (MicroBatcher(self._send_batch, config.batch_size, config.batch_wait_ms / 1000)
                        if config.batch_size > 1 else None)
        self.batching: dict[str, Any] | None = None
        """Set when the server turned out to take no prompt lists: the switch to single prompts, and why."""

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout))
        return self._session

    async def name_the_model(self) -> None:
        """A model given no name (`--endpoint URL` alone) is the one model the server serves (`GET /models`),
        asked once before the first call; a server serving several is a choice the user makes, so the error
        lists them."""
        if self.config.model is not None or not self.config.urls():
            return
        url = self.config.urls()[0].rstrip("/") + "/models"
        key = f"models.{self.name}.model"
        advice = f"give the name with --set {key}=NAME"
        try:
            async with self._session_for_loop().get(url) as response:
                status = response.status
                payload = await response.json(content_type=None) if status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            raise ConfigError(f"no model name, and asking {url} which model it serves failed "
                              f"({type(error).__name__}: {one_line(error, 160)}); {advice}", key=key) from None
        if status != 200:
            raise ConfigError(f"no model name, and {url} answered HTTP {status} when asked which model it serves; "
                              f"{advice}", key=key)
        entries = payload.get("data") if isinstance(payload, dict) else None
        served = [str(entry["id"]) for entry in entries or [] if isinstance(entry, dict) and "id" in entry]
        if len(served) != 1:
            listing = one_line(", ".join(served), 300) if served else "none"
            raise ConfigError(f"no model name, and {url} serves {len(served)} models ({listing}); {advice}", key=key)
        self.config.model = served[0]
        log.info("model '%s': the server at %s serves one model, %s", self.name, url, served[0])

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def payload(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """The path and body of a request, structured output asked for in the model's current mode."""
        body: dict[str, Any] = {"model": self.config.model,
                                **for_backend({**self.config.params, **request.params}, "openai")}
        if request.sample and isinstance(body.get("seed"), int):
            body["seed"] += request.sample  # n samples with a fixed seed must still differ
        if request.prompt is not None:
            body["prompt"] = request.prompt
            path = "/completions"
        else:
            body["messages"] = list(request.messages or ())
            path = "/chat/completions"
            if request.tools is not None:
                body["tools"] = list(request.tools)
                if request.tool_choice is not None:
                    body["tool_choice"] = request.tool_choice
        if request.json_schema is not None:
            apply_mode(self.structured.mode, body, request.json_schema, state_schema=self.structured.states_schema)
        return path, body

    async def complete(self, request: LLMRequest) -> Completion:
        started = time.monotonic()
        spent = 0  # attempts of requests the server refused before the model stepped down
        self.structured.used |= request.json_schema is not None
        while True:
            path, body = self.payload(request)
            try:
                if self.batcher is not None and self.batching is None and request.prompt is not None:
                    completion = await self.batcher.submit(body)
                else:
                    completion = (await self._with_retries(path, body, request=request))[0]
                break
            except RequestRefused as error:
                if request.json_schema is None or \
                        not self.structured.refused(mode_of(error.body), error.fields, str(error)):
                    error.attempts += spent
                    raise
                spent += error.attempts
        completion.attempts += spent
        completion.latency = time.monotonic() - started
        if request.json_schema is not None:
            self.structured.reply_seen(completion.text, completion.finish_reason, request.json_schema)
        return completion

    async def _send_batch(self, body: dict[str, Any]) -> Sequence[Completion | BaseException]:
        """A micro-batch. A server that refuses prompt lists answers each prompt alone instead; if one of
        those comes back, lists are the trouble, and the model sends single prompts for the rest of the run."""
        if self.batching is None:
            try:
                return await self._with_retries("/completions", body, refusal_is_final=True)
            except ModelCallError as error:
                refused_structure = isinstance(error, RequestRefused) and FIELD.get(mode_of(body), "") in error.fields
                if error.status not in LIST_REFUSAL_STATUS or refused_structure:  # the ladder's business
                    raise
                refusal = error
        else:
            refusal = None
        singles = await asyncio.gather(*(self._single(body, prompt) for prompt in body["prompt"]),
                                       return_exceptions=True)
        if refusal is not None and self.batching is None and \
                any(not isinstance(single, BaseException) for single in singles):
            self.batching = {"batch_size": 1, "configured": self.config.batch_size, "reason": str(refusal)}
            log.warning("model '%s': the server refused a list of %d prompts (%s); sending single prompts for "
                        "the rest of the run", self.name, len(body["prompt"]), refusal)
        return singles

    async def _single(self, body: dict[str, Any], prompt: str) -> Completion:
        return (await self._with_retries("/completions", {**body, "prompt": prompt}))[0]

    async def _with_retries(self, path: str, body: dict[str, Any], *, request: LLMRequest | None = None,
                            refusal_is_final: bool = False) -> list[Completion]:
        """One request (maybe carrying a batch of prompts), retried on transient faults. With `request`, the
        body is rebuilt if the model stepped down while it waited. With `refusal_is_final`, a 400/422/500/501
        is not retried: a prompt list may be what the server refuses."""
        estimate = _estimate_tokens(body) if self.tpm else 0  # stringifying the prompt costs; only TPM needs it
        attempt = 0
        while True:
            attempt += 1
            try:
                completions = await self._attempt(path, body, estimate, request)
                for completion in completions:
                    completion.attempts = attempt
                return completions
            except ModelCallError as error:
                final = refusal_is_final and error.status in LIST_REFUSAL_STATUS
                if not error.retryable or final or attempt > self.config.max_retries:
                    error.attempts = attempt
                    raise self._redacted(error) from None
                await asyncio.sleep(self._backoff(attempt, error.retry_after))

    def _redacted(self, error: ModelCallError) -> ModelCallError:
        """A server may echo the Authorization header in its error body; the key never reaches a file."""
        if self._secret and self._secret in str(error):
            message = str(error).replace(self._secret, "***")
            redacted = (RequestRefused(message, status=error.status or 0, fields=error.fields, body=error.body)
                        if isinstance(error, RequestRefused) else
                        ModelCallError(message, retryable=error.retryable, status=error.status,
                                       retry_after=error.retry_after))
            redacted.attempts = error.attempts
            return redacted
        return error

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return float(min(retry_after, BACKOFF_CAP_S))
        exponential: float = self.retry_base_delay * 2.0 ** (attempt - 1)
        return min(BACKOFF_CAP_S, exponential) * random.uniform(0.5, 1.0)

    async def _attempt(self, path: str, body: dict[str, Any], estimate: int,
                       request: LLMRequest | None = None) -> list[Completion]:
        if self.rpm:
            await self.rpm.take(1)
        reserved = await self.tpm.take(estimate) if self.tpm else 0
        used = 0  # a failed or cancelled call gives back its whole reservation
        try:
            ticket = await self.limiter.acquire()
        except BaseException:
            if self.tpm:
                self.tpm.refund(reserved)
            raise
        if request is not None and request.json_schema is not None and mode_of(body) != self.structured.mode:
            path, body = self.payload(request)  # queued behind the refusal that moved the model down
        replica = self.replicas.choose()
        ok = server_fault = False
        try:
            completions = await self._post(replica.url + path, body)
            ok = True
            self.limiter.on_success()
            used = sum(c.prompt_tokens + c.completion_tokens for c in completions)
            return completions
        except ModelCallError as error:
            server_fault = error.retryable
            if error.overload:
                self.limiter.on_overload(ticket)
            raise
        finally:
            if self.tpm:
                self.tpm.refund(reserved - used)
            self.replicas.done(replica, ok=ok, server_fault=server_fault)
            self.limiter.release()

    async def _post(self, url: str, body: dict[str, Any]) -> list[Completion]:
        session = self._session_for_loop()
        target, url = url, redact_url(url)  # messages reach failed.jsonl and logs: no credentials in them
        try:
            # bytes from orjson; the session's headers say it is JSON
            async with session.post(target, data=dumps(body)) as response:
                raw = await response.read()
                if response.status != 200:
                    message = _server_message(raw.decode("utf-8", "replace"))
                    fields = fields_named(message, body) if 400 <= response.status <= 599 else frozenset()
                    described = f"{self.name}: HTTP {response.status} from {url}: {message}"
                    if fields and not is_retryable(response.status, fields):
                        raise RequestRefused(described, status=response.status, fields=fields, body=body)
                    raise ModelCallError(
                        described, retryable=is_retryable(response.status, fields), status=response.status,
                        retry_after=_retry_after(response.headers.get("Retry-After")),
                        overload=response.status in OVERLOAD_STATUS)
        except TimeoutError:
            raise ModelCallError(f"{self.name}: no answer from {url} within {self.config.timeout:g}s",
                                 retryable=True, overload=True) from None
        except aiohttp.ClientError as error:
            raise ModelCallError(f"{self.name}: cannot reach {url}: {redact_text(str(error))}",
                                 retryable=True) from None
        try:
            data = loads(raw)
        except ValueError:  # HTML from a proxy, a body cut short: the server's fault, worth another try
            raise ModelCallError(f"{self.name}: HTTP 200 from {url} with a body that is not JSON: "
                                 f"{_start(raw)!r}", retryable=True, status=200) from None
        if not isinstance(data, dict):
            raise ModelCallError(f"{self.name}: HTTP 200 from {url} with JSON that is not an object: "
                                 f"{_start(raw)!r}", retryable=True, status=200)
        return _parse_choices(data, f"{self.name} ({url})", expected=_prompt_count(body))


def _start(raw: bytes) -> str:
    return raw[:120].decode("utf-8", "replace")


def _prompt_count(body: dict[str, Any]) -> int:
    prompt = body.get("prompt")
    return len(prompt) if isinstance(prompt, list) else 1


def _parse_choices(data: dict[str, Any], name: str, expected: int) -> list[Completion]:
    """One Completion per prompt, in prompt order; a batch's usage is shared out evenly. A reply of the wrong
    shape (a null content, choices that are not objects, usage that is not one) is a server's fault like a
    body that is not JSON: a one-line error, retried."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise _malformed(name, "no list of choice objects", data)
    if not all(_count(choice.get("index", 0)) is not None for choice in choices):
        raise _malformed(name, "a choice whose index is not a whole number", data)
    choices = sorted(choices, key=lambda choice: int(choice.get("index", 0)))
    texts = []
    for number, choice in enumerate(choices):
        text, found = _choice_text(choice)
        if text is None:
            raise _malformed(name, f"choice {number}'s text is {_kind(found)}", data)
        texts.append(text)
        if not isinstance(choice.get("finish_reason"), str | None):
            raise _malformed(name, f"choice {number}'s finish_reason is {_kind(choice['finish_reason'])}", data)
    if len(texts) < expected:
        raise ModelCallError(f"{name}: asked for {expected} answers, the server gave {len(texts)}",
                             retryable=True)
    usage = data.get("usage") or {}
    if not isinstance(usage, dict):
        raise _malformed(name, f"usage is {_kind(usage)}, not an object", data)
    tokens = {key: _count(usage.get(key) or 0) for key in ("prompt_tokens", "completion_tokens")}
    for key, count in tokens.items():
        if count is None:
            raise _malformed(name, f"usage.{key} is {_kind(usage[key])}, not a whole number", data)
    share = max(1, expected)
    return [Completion(text=text, prompt_tokens=(tokens["prompt_tokens"] or 0) // share,
                       completion_tokens=(tokens["completion_tokens"] or 0) // share,
                       finish_reason=choice.get("finish_reason"), tool_calls=_tool_calls(choice))
            for text, choice in zip(texts[:expected], choices, strict=False)]


def _tool_calls(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A chat choice's native tool calls (each checked for a function name), or None."""
    message = choice.get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not calls:
        return None
    if not isinstance(calls, list) or not all(isinstance(call, dict) and isinstance(call.get("function"), dict)
                                              and isinstance(call["function"].get("name"), str) for call in calls):
        raise ModelCallError(f"HTTP 200 with malformed tool_calls: {one_line(calls, 200)}", retryable=True,
                             status=200)
    return calls


def _choice_text(choice: dict[str, Any]) -> tuple[str | None, Any]:
    """A chat choice's message content, or a completion choice's text (None when it is not a string), and
    what stood where the text should be."""
    if "message" not in choice:
        found = choice.get("text")
    elif isinstance(choice["message"], dict):
        found = choice["message"].get("content")
        if found is None and choice["message"].get("tool_calls"):
            return "", None  # a turn that only calls tools has no text
    else:  # a message that is not an object, even a string, is not a chat answer
        return None, choice["message"]
    return (found if isinstance(found, str) else None), found


def _count(value: Any) -> int | None:
    """A count as servers send it (an int, or a float holding one); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0 \
            or value != int(value):
        return None
    return int(value)


def _kind(value: Any) -> str:
    """How a wrong value is named in an error: null, a dict, a list, 'abc'."""
    if value is None:
        return "null"
    return repr(value[:40]) if isinstance(value, str) else f"a {type(value).__name__}"


def _malformed(name: str, what: str, data: dict[str, Any]) -> ModelCallError:
    return ModelCallError(f"{name}: HTTP 200 with a malformed reply ({what}): {one_line(data, 200)}",
                          retryable=True, status=200)


def _server_message(text: str) -> str:
    try:
        data = json.loads(text)
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:300]
    except (ValueError, AttributeError):
        return text[:300]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _estimate_tokens(body: dict[str, Any]) -> int:
    """Chars/4 for the prompt plus max_tokens: reserved in the TPM bucket, corrected after the call."""
    prompt_chars = len(str(body.get("messages") or body.get("prompt") or ""))
    return prompt_chars // 4 + int(body.get("max_tokens") or 256) * _prompt_count(body)

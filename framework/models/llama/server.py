"""`synthloom serve`: the embedded model as an OpenAI-compatible server on loopback, so other tools and
other synthloom runs can share one loaded model. Non-streaming chat and completions, with JSON-schema
constrained output through llama.cpp grammars; concurrent requests are decoded together in one batch.

Loopback is not a wall against the user's own browser: any web page may POST to 127.0.0.1, and a page on a
rebound DNS name may even read the answers. So a request must name this server in `Host` (no other name
resolves to it on purpose), must carry no foreign `Origin`, and must say `Content-Type: application/json`
(which a page cannot send without a CORS preflight this server never grants). Each request is bounded: by
`max_tokens` (a default when it gives none), by a schema whose least valid answer fits in them, and by a
deadline, so no request holds a decode slot for minutes.
"""
from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ...config.schema import ModelConfig
from ...errors import ModelCallError, SynthloomError
from ..base import LLMRequest
from ..schema_bounds import least_characters
from .client import LocalClient

MODEL_ID = "smollm2-135m-instruct"
_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "presence_penalty",
           "frequency_penalty", "repeat_penalty", "repetition_penalty", "min_p")
DEFAULT_MAX_TOKENS = 256
"""A request that gives no max_tokens gets this many (as the embedded backend does in a run)."""
DEADLINE_S = 60.0
"""How long a request may take, queueing included; `serve --deadline` changes it."""
CHARACTERS_PER_TOKEN = 16
"""Four times what JSON and English average a token: a schema whose least valid answer is longer than
max_tokens times this would end cut off (only runs of spaces or punctuation make longer tokens, up to 81
bytes in SmolLM2's vocabulary, and no answer is made of them)."""


@dataclass
class _Names:
    """The `Host` values this server answers; known once it is listening (its port may have been 0)."""

    hosts: set[str] = field(default_factory=set)
    bound: bool = False
    any_host: bool = False


_NAMES = web.AppKey("names", _Names)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object"}
    return None


def host_names(host: str, port: int) -> set[str]:
    """The `Host` values that name this server: its address, and `localhost` when it listens on loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return {f"{host}:{port}".lower()}
    shown = f"[{address}]" if address.version == 6 else str(address)
    return {f"{shown}:{port}", *([f"localhost:{port}"] if address.is_loopback else [])}


def _is_wildcard(host: str) -> bool:
    """0.0.0.0 or ::: the user chose to serve every name the machine has (and leaves loopback's shelter)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


@web.middleware
async def same_origin_only(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Refuse what a web page in the user's browser could send: another `Host` (DNS rebinding), a foreign
    `Origin`, or a POST that is not `application/json` (a CORS "simple request" needs no preflight)."""
    names = request.app[_NAMES]
    host = (request.headers.get("Host") or "").lower()
    if not names.bound:
        return _error(503, "the server is starting; try again")
    if not names.any_host and host not in names.hosts:
        return _error(421, f"this server answers requests for {' or '.join(sorted(names.hosts))}, not for "
                           f"'{host[:100]}'")
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != f"http://{host}":
        return _error(403, "cross-origin requests are refused: synthloom serve is for programs on this "
                           "machine, not for web pages")
    if request.method == "POST" and request.content_type != "application/json":
        return _error(415, "send the request body as JSON with Content-Type: application/json")
    return await handler(request)


def _max_tokens(params: dict[str, Any]) -> int | str:
    """The request's max_tokens (the default when it gives none), or why it cannot be taken."""
    value = params.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "max_tokens must be a whole number of at least 1"
    return value


def build_app(config: ModelConfig | None = None, model_id: str = MODEL_ID, *,
              deadline_s: float = DEADLINE_S) -> web.Application:
    client = LocalClient("serve", config or ModelConfig(backend="local"))

    async def answer(body: dict[str, Any], *, chat: bool) -> web.Response:
        if body.get("stream"):
            return _error(400, "streaming is not supported by synthloom serve; send stream: false")
        params = {key: body[key] for key in _PARAMS if key in body}
        max_tokens = _max_tokens(params)
        if isinstance(max_tokens, str):
            return _error(400, max_tokens)
        schema = _schema(body)
        if schema is not None:
            least = least_characters(schema)
            if least > max_tokens * CHARACTERS_PER_TOKEN:
                return _error(400, f"the least answer this schema allows is {least} characters long, more than "
                                   f"max_tokens ({max_tokens}) can hold; lower its minItems/minLength, or raise "
                                   f"max_tokens")
        if chat:
            if not isinstance(body.get("messages"), list):
                return _error(400, "messages must be a list of {role, content}")
            request = LLMRequest(messages=tuple(body["messages"]), params=params, json_schema=schema)
        else:
            if not isinstance(body.get("prompt"), str):
                return _error(400, "prompt must be a string (one prompt per request)")
            request = LLMRequest(prompt=body["prompt"], params=params, json_schema=schema)
        try:
            completion = await asyncio.wait_for(client.complete(request), deadline_s)
        except TimeoutError:  # the cancelled call's sequence leaves the batch at the engine's next step
            return _error(504, f"the answer took longer than {deadline_s:g}s (this server's deadline); ask for "
                               f"fewer max_tokens or a smaller schema")
        except (ModelCallError, SynthloomError) as error:
            return _error(400, str(error))
        choice: dict[str, Any] = {"index": 0, "finish_reason": completion.finish_reason or "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": completion.text}
        else:
            choice["text"] = completion.text
        return web.json_response({
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model_id, "choices": [choice],
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                      "total_tokens": completion.prompt_tokens + completion.completion_tokens}})

    async def read(request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        return body if isinstance(body, dict) else _error(400, "the request body must be a JSON object")

    async def chat(request: web.Request) -> web.Response:
        body = await read(request)
        return body if isinstance(body, web.Response) else await answer(body, chat=True)

    async def completions(request: web.Request) -> web.Response:
        body = await read(request)
        return body if isinstance(body, web.Response) else await answer(body, chat=False)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model_id, "object": "model",
                                                              "owned_by": "synthloom"}]})

    async def close_model(app: web.Application) -> None:
        await client.close()

    app = web.Application(middlewares=[same_origin_only])
    app[_NAMES] = _Names()
    app.on_cleanup.append(close_model)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


async def serve(host: str, port: int, config: ModelConfig | None = None, *,
                deadline_s: float = DEADLINE_S) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (to clean up) and the base URL actually bound."""
    app = build_app(config, deadline_s=deadline_s)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    names = app[_NAMES]
    names.hosts, names.any_host = host_names(host, bound[1]), _is_wildcard(host)
    names.bound = True
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound[1]}/v1"

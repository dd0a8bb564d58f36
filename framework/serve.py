"""`synthloom serve`: the embedded model as an OpenAI-compatible server on loopback, so other tools and
other synthloom runs can share one loaded model. Non-streaming chat and completions, with JSON-schema
constrained output through llama.cpp grammars; concurrent requests are decoded together in one batch."""
from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from .config import ModelConfig
from .errors import ModelCallError, SynthloomError
from .models.base import LLMRequest
from .models.local import LocalClient

MODEL_ID = "smollm2-135m-instruct"
_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "presence_penalty",
           "frequency_penalty", "repeat_penalty", "repetition_penalty", "min_p")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object"}
    return None


def build_app(config: ModelConfig | None = None, model_id: str = MODEL_ID) -> web.Application:
    client = LocalClient("serve", config or ModelConfig(backend="local"))

    async def answer(body: dict[str, Any], *, chat: bool) -> web.Response:
        if body.get("stream"):
            return _error(400, "streaming is not supported by synthloom serve; send stream: false")
        params = {key: body[key] for key in _PARAMS if key in body}
        if chat:
            if not isinstance(body.get("messages"), list):
                return _error(400, "messages must be a list of {role, content}")
            request = LLMRequest(messages=tuple(body["messages"]), params=params, json_schema=_schema(body))
        else:
            if not isinstance(body.get("prompt"), str):
                return _error(400, "prompt must be a string (one prompt per request)")
            request = LLMRequest(prompt=body["prompt"], params=params, json_schema=_schema(body))
        try:
            completion = await client.complete(request)
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

    app = web.Application()
    app.on_cleanup.append(close_model)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


async def serve(host: str, port: int, config: ModelConfig | None = None) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (to clean up) and the base URL actually bound."""
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    return runner, f"http://{host}:{bound[1]}/v1"

"""A real OpenAI-compatible HTTP server for tests and benchmarks: scripted replies, latency and faults.

It speaks /v1/chat/completions, /v1/completions (a prompt or a list of prompts) and /v1/models on
loopback, in its own thread and event loop, so async tests, CLI subprocesses and benchmarks can all use
it. It counts what it saw: requests, status codes and the peak of concurrent requests.

    with FakeOpenAI(latency=0.05, fail_every={7: 500, 11: 429}, hang_every=50) as server:
        ... point a model's base_url at server.url ...

It can also refuse what some real servers refuse, with their own status and wording: `refuse_json_schema`
(llama-cpp-python's server: HTTP 500 for `response_format: json_schema`), `prompt_only` (a server that
takes no structured-output field at all: HTTP 400 naming it, as OpenAI does for unknown arguments) and
`refuse_prompt_lists` (llama-cpp-python again: a bare HTTP 500 for a list `prompt`).

`malformed_every={n: mode}` answers every n-th request with HTTP 200 and well-formed JSON of the wrong shape,
one of `MALFORMED` (a null content, a list of numbers for choices, a string for usage, ...). `like_vllm`
answers as current vLLM (0.10 and newer) does: `structured_outputs: {json: schema}` and `json_schema` are followed,
`guided_json` (removed) and the schema of `json_object` are ignored without a word. `cut_json_below` makes a
structured reply whose `max_tokens` is below it come back cut off (half its text, finish_reason "length").
`hold=[pattern]` keeps the replies to matching prompts until the test calls `release()`: a test that needs
a run to still be going (a second run against its lock, a signal, progress lines) holds it open instead of
hoping the machine is slow enough. A scripted reply that is a `ToolCalls` answers with native `tool_calls`
(content null, finish_reason "tool_calls"), as OpenAI and vLLM do.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Reply = str | Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class ToolCalls:
    """A scripted chat reply that calls tools natively: (name, arguments) pairs; arguments that are not a
    string are sent as JSON text, as servers send them."""

    calls: tuple[tuple[str, Any], ...]

    def message(self) -> dict[str, Any]:
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{index}", "type": "function",
             "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for index, (name, args) in enumerate(self.calls)]}


def _chat_reply(choice: Any = None, **top: Any) -> dict[str, Any]:
    """A chat completion whose one choice (or other top-level fields) is replaced."""
    good = {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}
    return {"id": "chatcmpl-bad", "object": "chat.completion", "model": "fake-model",
            "choices": [good if choice is None else choice],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, **top}


MALFORMED: dict[str, dict[str, Any]] = {
    "content_null": _chat_reply({"index": 0, "message": {"role": "assistant", "content": None},
                                 "finish_reason": "stop"}),
    "content_a_dict": _chat_reply({"index": 0, "message": {"role": "assistant", "content": {"text": "hi"}},
                                   "finish_reason": "stop"}),
    "content_a_list": _chat_reply({"index": 0, "message": {"role": "assistant", "content": ["hi"]}}),
    "no_content": _chat_reply({"index": 0, "message": {"role": "assistant"}, "finish_reason": "stop"}),
    "message_a_string": _chat_reply({"index": 0, "message": "hi", "finish_reason": "stop"}),
    "text_a_number": _chat_reply({"index": 0, "text": 5, "finish_reason": "stop"}),
    "choice_a_number": _chat_reply(choices=[1]),
    "choices_a_dict": _chat_reply(choices={"0": {"message": {"role": "assistant", "content": "hi"}}}),
    "choices_null": _chat_reply(choices=None),
    "choices_empty": _chat_reply(choices=[]),
    "index_a_string": _chat_reply({"index": "first", "message": {"role": "assistant", "content": "hi"}}),
    "finish_reason_a_list": _chat_reply({"index": 0, "message": {"role": "assistant", "content": "hi"},
                                         "finish_reason": ["stop"]}),
    "usage_a_string": _chat_reply(usage="abc"),
    "usage_a_list": _chat_reply(usage=[3, 1]),
    "usage_tokens_a_string": _chat_reply(usage={"prompt_tokens": "abc", "completion_tokens": 1}),
    "usage_tokens_negative": _chat_reply(usage={"prompt_tokens": 3, "completion_tokens": -1}),
}
"""Replies a broken proxy or server gives: valid JSON, HTTP 200, not an answer."""


def last_user_text(body: dict[str, Any]) -> str:
    if "prompt" in body:
        prompt = body["prompt"]
        return prompt if isinstance(prompt, str) else "\n".join(prompt)
    users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def example_for_schema(schema: dict[str, Any]) -> Any:
    """A value that fits a (simple) JSON Schema, for requests that ask for structured output."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        return {key: example_for_schema(sub) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_for_schema(schema.get("items", {}))]
    if kind == "integer":
        return max(int(schema.get("minimum", 8)), min(8, int(schema.get("maximum", 8))))
    if kind == "number":
        return 8.0
    if kind == "boolean":
        return True
    return "ok"


class FakeOpenAI:
    def __init__(self, *, latency: float = 0.0, script: list[tuple[str, Reply]] | None = None,
                 fail_every: dict[int, int] | None = None, hang_every: int | None = None,
                 retry_after: float = 0.05, model: str = "fake-model", port: int = 0,
                 fail_status: int | None = None, delays: list[tuple[str, float]] | None = None,
                 capacity: int | None = None, raw_every: dict[int, str] | None = None,
                 echo_auth: bool = False, refuse_json_schema: bool = False, prompt_only: bool = False,
                 refuse_prompt_lists: bool = False, cut_off: list[str] | None = None,
                 malformed_every: dict[int, str] | None = None, hold: list[str] | None = None,
                 served: list[str] | None = None, like_vllm: bool = False, cut_json_below: int | None = None,
                 refuse_tools: bool = False):
        self.latency = latency
        self.served = served  # what /v1/models lists (default: the one model); a vLLM serving several
        self.script = [(re.compile(pattern, re.DOTALL), reply) for pattern, reply in script or []]
        self.fail_every = fail_every or {}
        self.hang_every = hang_every
        self.retry_after = retry_after
        self.fail_status = fail_status
        self.capacity = capacity  # more requests at once than this answer 429, like a full server
        self.raw_every = raw_every or {}  # every n-th request gets HTTP 200 with this body (HTML, cut JSON)
        self.malformed_every = malformed_every or {}  # every n-th request gets HTTP 200 with MALFORMED[mode]
        self.echo_auth = echo_auth  # faults echo the Authorization header, as some proxies do
        self.refuse_json_schema = refuse_json_schema
        self.prompt_only = prompt_only
        self.refuse_prompt_lists = refuse_prompt_lists
        self.like_vllm = like_vllm
        self.refuse_tools = refuse_tools  # vLLM started without --enable-auto-tool-choice: HTTP 400 for tools
        self.cut_json_below = cut_json_below
        # replies to prompts matching one of these come back with finish_reason "length", like a reply
        # cut by max_tokens
        self.cut_off = [re.compile(pattern, re.DOTALL) for pattern in cut_off or []]
        self.delays = [(re.compile(pattern, re.DOTALL), seconds) for pattern, seconds in delays or []]
        # requests whose prompt matches one of these get no reply until `release()`: a test holds a run
        # open for as long as it needs, however fast or slow the machine
        self.hold = [re.compile(pattern, re.DOTALL) for pattern in hold or []]
        self._released: asyncio.Event | None = None
        self.held = 0
        self.headers_seen: list[dict[str, str]] = []
        self.model = model
        self.port = port
        self.requests = 0
        self.arrivals: list[float] = []  # time.monotonic() of each request (with keep_bodies)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.statuses: Counter[int] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.keep_bodies = True
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.attachments: list[Callable[[web.Application], None]] = []  # more routes (fixture_batches.py)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fixture server did not start")

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start_site())
        self._ready.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)  # hanging requests die with the server
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        if self._runner:
            self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start_site(self) -> None:
        self._released = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        for attach in self.attachments:
            attach(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop serving; connections in flight are dropped, like a server that died."""
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def release(self) -> None:
        """Answer the held requests, and every later one that matches, at once."""
        assert self._loop is not None and self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = self.peak_in_flight = 0
            self.arrivals.clear()
            self.statuses.clear()
            self.bodies.clear()

    @property
    def successes(self) -> int:
        return self.statuses[200]

    # -- handlers ------------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        served = self.served if self.served is not None else [self.model]
        return web.json_response({"object": "list", "data": [{"id": name, "object": "model"} for name in served]})

    async def _admit(self, body: dict[str, Any], request: web.Request | None = None) -> web.Response | None:
        """Count the request and apply latency and faults; a response here replaces the normal one."""
        with self._lock:
            self.requests += 1
            number = self.requests
            if self.keep_bodies:
                self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            full = self.capacity is not None and self.in_flight > self.capacity
            if self.keep_bodies:
                self.bodies.append(body)
        try:
            refusal = self._refusal(body)
            if refusal is not None:
                self.statuses[refusal.status] += 1
                return refusal
            if full:
                self.statuses[429] += 1
                return web.json_response({"error": {"message": "server full"}}, status=429,
                                         headers={"Retry-After": str(self.retry_after)})
            if self.hang_every and number % self.hang_every == 0:
                await asyncio.sleep(3600)
            if self.latency:
                await asyncio.sleep(self.latency)
            text = last_user_text(body)
            for pattern, seconds in self.delays:
                if pattern.search(text):
                    await asyncio.sleep(seconds)
            if self._released is not None and any(pattern.search(text) for pattern in self.hold):
                with self._lock:
                    self.held += 1
                await self._released.wait()
                if request is not None and (request.transport is None or request.transport.is_closing()):
                    self.statuses[499] += 1  # the client gave up while held (a stopped run): no answer
                    return web.Response(status=499)
            status = self.fail_status
            for every, code in self.fail_every.items():
                if number % every == 0:
                    status = code
            if status is not None:
                self.statuses[status] += 1
                headers = {"Retry-After": str(self.retry_after)} if status == 429 else {}
                message = f"injected fault {status}"
                if self.echo_auth and request is not None:
                    message += f" (request had Authorization: {request.headers.get('Authorization')})"
                return web.json_response({"error": {"message": message, "code": status}},
                                         status=status, headers=headers)
            for every, raw in self.raw_every.items():
                if number % every == 0:
                    self.statuses[-200] += 1  # a 200 that is not an answer
                    return web.Response(text=raw, status=200, content_type="text/html")
            for every, mode in self.malformed_every.items():
                if number % every == 0:
                    self.statuses[-200] += 1
                    return web.json_response(MALFORMED[mode])
            self.statuses[200] += 1
            return None
        finally:
            with self._lock:
                self.in_flight -= 1

    def _refusal(self, body: dict[str, Any]) -> web.Response | None:
        """What a server of a kind that does not take this request answers, word for word."""
        response_format = body.get("response_format") or {}
        if self.refuse_json_schema and response_format.get("type") == "json_schema":
            detail = ("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                      "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
                      "'ctx': {'expected': \"'text' or 'json_object'\"}}")
            return web.json_response({"error": {"message": detail, "type": "internal_server_error",
                                                "param": None, "code": None}}, status=500)
        if self.prompt_only:
            for field in ("response_format", "structured_outputs", "guided_json"):
                if field in body:
                    return web.json_response({"error": {"message": f"Unrecognized request argument supplied: "
                                                                   f"{field}", "type": "invalid_request_error",
                                                        "param": None, "code": None}}, status=400)
        if self.refuse_tools and "tools" in body:
            return web.json_response({"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice '
                                                           "and --tool-call-parser to be set",
                                                "type": "BadRequestError", "param": None, "code": 400}}, status=400)
        if self.refuse_prompt_lists and isinstance(body.get("prompt"), list):
            return web.json_response({"error": {"message": "", "type": "internal_server_error", "param": None,
                                                "code": None}}, status=500)
        return None

    def _reply_text(self, body: dict[str, Any], text: str) -> Any:
        for pattern, reply in self.script:
            if pattern.search(text):
                value = reply(body) if callable(reply) else reply
                return value if isinstance(value, str | ToolCalls) else json.dumps(value)
        if self.like_vllm and (body.get("response_format") or {}).get("type") == "json_object":
            return "{}"  # any JSON object: vLLM ignores json_object's schema
        schema = self._schema(body)
        if schema:
            reply = json.dumps(example_for_schema(schema))
            return reply[:len(reply) // 2] if self._cut_json(body) else reply
        return f"Reply to: {text[:60]}"

    def _schema(self, body: dict[str, Any]) -> Any:
        """The schema a request asks its reply to fit, as this server reads the request."""
        response_format = body.get("response_format") or {}
        return ((response_format.get("json_schema") or {}).get("schema") or response_format.get("schema")
                or (body.get("structured_outputs") or {}).get("json")
                or (None if self.like_vllm else body.get("guided_json")))

    def _cut_json(self, body: dict[str, Any]) -> bool:
        return self.cut_json_below is not None and bool(self._schema(body)) and \
            int(body.get("max_tokens") or 0) < self.cut_json_below

    def _finish_reason(self, text: str, body: dict[str, Any] | None = None) -> str:
        cut = body is not None and self._cut_json(body)
        return "length" if cut or any(pattern.search(text) for pattern in self.cut_off) else "stop"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.keep_bodies:
            self.headers_seen.append(dict(request.headers))
        fault = await self._admit(body, request)
        if fault is not None:
            return fault
        if body.get("model") not in (self.model, None) and self.model != "*":
            return web.json_response({"error": {"message": f"model '{body.get('model')}' not found"}},
                                     status=404)
        text = self._reply_text(body, last_user_text(body))
        finish = self._finish_reason(last_user_text(body), body)
        message = {"role": "assistant", "content": text}
        if isinstance(text, ToolCalls):
            message, text, finish = text.message(), "", "tool_calls"
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return web.json_response({
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_words + len(text.split())}})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        fault = await self._admit(body, request)
        if fault is not None:
            return fault
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices, completion_words = [], 0
        for index, prompt in enumerate(prompts):
            text = self._reply_text({**body, "prompt": prompt}, prompt)
            completion_words += len(text.split())
            choices.append({"index": index, "text": text, "finish_reason": self._finish_reason(prompt, body)})
        prompt_words = sum(len(p.split()) for p in prompts)
        return web.json_response({
            "id": f"cmpl-{self.requests}", "object": "text_completion", "created": int(time.time()),
            "model": self.model, "choices": choices,
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": completion_words,
                      "total_tokens": prompt_words + completion_words}})


def main() -> None:
    """Run the fixture server alone (benchmarks start it in a separate process)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=None, help="429 beyond this many requests at once")
    args = parser.parse_args()
    server = FakeOpenAI(latency=args.latency, port=args.port, model="*", capacity=args.capacity)
    server.keep_bodies = False
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

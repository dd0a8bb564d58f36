"""The OpenAI Batch API on the fixture server: `/v1/files` (upload, content) and `/v1/batches` (create,
retrieve, list, cancel), answering each line as the fixture's synchronous endpoints would.

A test controls the clock: a batch completes `complete_after` seconds after it was created, and not while
`hold()` is in force (until `release()`); `expire_next`/`fail_next` make the next batches expire (answering
only their first `answer_before_expiry` lines, as OpenAI returns the finished part of an expired batch) or
fail validation; lines the fixture server would refuse (`refuse_json_schema`, `prompt_only`) come back in
the error file with its status and wording; `fail_lines={pattern: (status, times)}` puts lines whose
prompt matches into the error file with that status (200: a malformed reply in the output file), the first
`times` times they are seen. Every
submitted line is counted by `custom_id` (`lines`), so a test can say each call was paid for exactly once.

    server = FakeOpenAI()
    batches = FakeBatches(server, complete_after=0.2)
    with server:
        ...
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web

from tests.fixture_server import MALFORMED, FakeOpenAI, last_user_text


class FakeBatches:
    def __init__(self, server: FakeOpenAI, *, complete_after: float = 0.0,
                 fail_lines: dict[str, tuple[int, int]] | None = None):
        self.server = server
        self.complete_after = complete_after
        self.fail_lines = {re.compile(pattern, re.DOTALL): list(rule) for pattern, rule in (fail_lines or {}).items()}
        self.expire_next = 0
        self.answer_before_expiry = 0
        self.fail_next = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lines: Counter[str] = Counter()
        """custom_id -> times submitted."""
        self.line_sizes: list[int] = []
        """Lines of each created batch, in order."""
        self.cancelled: list[str] = []
        self.outage = 0
        """The next this many batch retrievals answer 503, as a provider in trouble does."""
        self._held = False
        self._lock = threading.Lock()
        server.attachments.append(self.attach)

    # -- control -------------------------------------------------------------------------------------

    def hold(self) -> None:
        """No batch completes until `release()`."""
        self._held = True

    def release(self) -> None:
        self._held = False

    @property
    def submitted(self) -> int:
        return sum(self.lines.values())

    def statuses(self) -> Counter[str]:
        with self._lock:
            return Counter(str(batch["status"]) for batch in self.batches.values())

    # -- routes --------------------------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{batch_id}", self._retrieve)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel)

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not isinstance(upload, web.FileField):
            return web.json_response({"error": {"message": "purpose must be batch, with a file"}}, status=400)
        content = upload.file.read()
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = content
        return web.json_response({"id": file_id, "object": "file", "purpose": "batch", "bytes": len(content)})

    async def _content(self, request: web.Request) -> web.Response:
        content = self.files.get(request.match_info["file_id"])
        if content is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=content, content_type="application/jsonl")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        content = self.files.get(str(body.get("input_file_id")))
        if content is None:
            return web.json_response({"error": {"message": "no such input file"}}, status=400)
        lines = [json.loads(raw) for raw in content.splitlines() if raw.strip()]
        with self._lock:
            batch_id = f"batch_{len(self.batches) + 1}"
            self.lines.update(str(line["custom_id"]) for line in lines)
            self.line_sizes.append(len(lines))
            fate = "expire" if self.expire_next else "fail" if self.fail_next else "complete"
            if self.expire_next:
                self.expire_next -= 1
            elif self.fail_next:
                self.fail_next -= 1
            batch = self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
                "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                "status": "in_progress", "created_at": int(time.time()), "metadata": body.get("metadata"),
                "output_file_id": None, "error_file_id": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "_lines": lines, "_fate": fate, "_created": time.monotonic()}
        return web.json_response(_public(batch))

    async def _list(self, request: web.Request) -> web.Response:
        with self._lock:
            ordered = sorted(self.batches.values(), key=lambda batch: -int(batch["id"].split("_")[1]))
        after = request.query.get("after")
        if after:
            ids = [batch["id"] for batch in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        return web.json_response({"object": "list", "data": [_public(batch) for batch in ordered[:limit]],
                                  "has_more": len(ordered) > limit})

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        with self._lock:
            if self.outage > 0:
                self.outage -= 1
                return web.json_response({"error": {"message": "injected outage"}}, status=503)
            if batch["status"] == "in_progress" and not self._held and \
                    time.monotonic() - batch["_created"] >= self.complete_after:
                self._finish(batch)
        return web.json_response(_public(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        with self._lock:
            if self.outage > 0:
                self.outage -= 1
                return web.json_response({"error": {"message": "injected outage"}}, status=503)
            if batch["status"] == "in_progress":
                batch["status"] = "cancelled"
                self.cancelled.append(batch["id"])
        return web.json_response(_public(batch))

    # -- answering -----------------------------------------------------------------------------------

    def _finish(self, batch: dict[str, Any]) -> None:
        if batch["_fate"] == "fail":
            batch["status"] = "failed"
            batch["errors"] = {"data": [{"code": "invalid_request", "message": "injected batch failure"}]}
            return
        lines = batch["_lines"]
        answered = lines[:self.answer_before_expiry] if batch["_fate"] == "expire" else lines
        outputs, errors = [], []
        for line in answered:
            refusal = self.server._refusal(line["body"])  # what this kind of server refuses, line by line
            if refusal is not None:
                assert isinstance(refusal.body, bytes)
                errors.append({"id": f"resp-{line['custom_id']}", "custom_id": line["custom_id"],
                               "response": {"status_code": refusal.status, "body": json.loads(refusal.body)},
                               "error": None})
                continue
            status = self._line_fault(line["body"])
            if status == 200:  # a 200 that is no answer: what a broken proxy gives
                outputs.append({"id": f"resp-{line['custom_id']}", "custom_id": line["custom_id"],
                                "response": {"status_code": 200, "body": MALFORMED["choices_null"]}, "error": None})
                continue
            if status is None:
                outputs.append({"id": f"resp-{line['custom_id']}", "custom_id": line["custom_id"],
                                "response": {"status_code": 200, "body": self._reply(line)}, "error": None})
            else:
                errors.append({"id": f"resp-{line['custom_id']}", "custom_id": line["custom_id"],
                               "response": {"status_code": status, "body": {"error": {
                                   "message": f"injected line fault {status}"}}}, "error": None})
        if batch["_fate"] == "expire":
            errors += [{"id": None, "custom_id": line["custom_id"], "response": None,
                        "error": {"code": "batch_expired", "message": "This request could not be executed before "
                                  "the completion window expired."}} for line in lines[len(answered):]]
        batch["status"] = "expired" if batch["_fate"] == "expire" else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}
        for key, rows in (("output_file_id", outputs), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
                batch[key] = file_id

    def _line_fault(self, body: dict[str, Any]) -> int | None:
        text = last_user_text(body)
        for pattern, rule in self.fail_lines.items():
            if pattern.search(text) and rule[1] > 0:
                rule[1] -= 1
                return int(rule[0])
        return None

    def _reply(self, line: dict[str, Any]) -> dict[str, Any]:
        """What the synchronous endpoint would answer to the line's body."""
        body = line["body"]
        server = self.server
        text = last_user_text(body)
        reply = server._reply_text(body, text)
        finish = server._finish_reason(text, body)
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(reply.split()),
                 "total_tokens": len(text.split()) + len(reply.split())}
        if line["url"].endswith("/completions") and not line["url"].endswith("/chat/completions"):
            return {"id": "cmpl-batch", "object": "text_completion", "model": server.model, "usage": usage,
                    "choices": [{"index": 0, "text": reply, "finish_reason": finish}]}
        return {"id": "chatcmpl-batch", "object": "chat.completion", "model": server.model, "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": finish}]}


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if not key.startswith("_")}


def main() -> None:
    """The fixture server with batches, alone in a process (for trying the CLI by hand)."""
    server = FakeOpenAI(model="*")
    FakeBatches(server, complete_after=1.0)
    server.start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

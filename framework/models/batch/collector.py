"""Calls from many records join one open batch; a full batch, or one open for `max_wait_s`, is submitted,
and each record waits for its own line of the answer.

A call is a line: a `custom_id` and a request body. Before a line joins the open batch, the ledger is asked
whether a submission already carried it (a resumed run, or an identical call of this run): if so, the call
waits for that batch instead. A batch that ended without a line's answer (failed, expired, cancelled) sends
only the lines it left unanswered again, in a new batch, while the line has rounds left: `max_retries` + 1
batches that ended without its answer, counted in the ledger over every part of the run (a cancelled one
spends none). One task per pending batch polls the provider; any number of records wait on it (shielded,
so a cancelled record never cancels the others' batch).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ...config.schema import BatchSettings
from ...errors import ModelCallError, one_line
from ...fast_json import dumps_line, loads
from .api import TERMINAL, BatchAPI
from .ledger import BATCHES, Submission, SubmissionLedger

log = logging.getLogger("synthloom.models")
T = TypeVar("T")

Line = dict[str, Any]
"""One line of an output or error file: {custom_id, response: {status_code, body}, error}."""
UNANSWERED_CODES = frozenset({"batch_expired", "batch_cancelled", "batch_failed"})
"""Error-file codes that say the provider never ran the line: it is sent again, not failed."""


@dataclass
class OpenBatch:
    """Lines waiting to be submitted together (one endpoint per batch, as the Batch API wants)."""

    endpoint: str
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    submitted: asyncio.Future[PendingBatch] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    timer: asyncio.TimerHandle | None = None
    closed: bool = False


class PendingBatch:
    """A submitted batch: one task polls it to its end and gathers its answers by `custom_id`."""

    def __init__(self, submission: Submission, collector: BatchCollector):
        self.submission = submission
        self.batch_id = submission.batch_id
        self.status = submission.status
        self.collector = collector
        self.claims = 0
        """Answers handed out: once every answer was, the batch is forgotten (memory stays flat)."""
        self.task: asyncio.Task[dict[str, Line]] = asyncio.create_task(self._follow())

    @property
    def pending(self) -> bool:
        return not self.task.done()

    async def answer(self, custom_id: str) -> Line | None:
        """The line's answer, or None when the batch ended without it."""
        answers = await asyncio.shield(self.task)
        line = answers.get(custom_id)
        if line is not None:
            self.claims += 1
            if self.claims >= len(answers):  # asked again later, the answer is downloaded again
                self.collector.forget(self)
        return line

    async def _follow(self) -> dict[str, Line]:
        collector, api = self.collector, self.collector.api
        batch = await self._patiently(self._created)
        while batch.get("status") not in TERMINAL:
            await asyncio.sleep(collector.settings.poll_seconds)
            batch = await self._patiently(lambda: api.retrieve(str(self.batch_id)))
        self.status = str(batch["status"])
        collector.ledger.settled(self.submission.id, self.status)
        collector.ended[self.status] = collector.ended.get(self.status, 0) + 1
        answers: dict[str, Line] = {}
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                content = await self._patiently(functools.partial(api.content, str(batch[key])))
                for raw in content.splitlines():
                    line = _line(raw)
                    if line is not None and not _unanswered(line):
                        answers.setdefault(str(line["custom_id"]), line)
        if self.status != "completed":
            log.warning("model '%s': batch %s %s; %d of its %d lines answered, the rest go again while their "
                        "rounds last",
                        collector.name, self.batch_id, self.status, len(answers), self.submission.lines)
        return answers

    async def _patiently(self, ask: Callable[[], Awaitable[T]]) -> T:
        """A batch runs for hours and is paid for: a provider down for longer than a call's retries (a
        transient fault: 429, 5xx, no connection) is asked again every `poll_seconds` until it answers,
        rather than failing every record waiting on the batch. A refusal (a 404 for a batch id) is final."""
        warned = False
        while True:
            try:
                return await ask()
            except ModelCallError as error:
                if not error.retryable:
                    raise
                if not warned:
                    log.warning("model '%s': batch %s cannot be followed for now (%s); asking again every %gs",
                                self.collector.name, self.batch_id, one_line(error, 200),
                                self.collector.settings.poll_seconds)
                    warned = True
                await asyncio.sleep(self.collector.settings.poll_seconds)

    async def _created(self) -> dict[str, Any]:
        """The batch as the provider has it; created here when the ledger holds only its input file and
        the provider has no batch made from that file (a run killed between the upload and the create)."""
        collector, api = self.collector, self.collector.api
        if self.batch_id is not None:
            return await api.retrieve(self.batch_id)
        found = await api.find_by_input_file(self.submission.input_file)
        batch = found or await api.create(self.submission.input_file, self.submission.endpoint,
                                          self.submission.completion_window,
                                          {"synthloom_model": collector.name})
        self.batch_id = str(batch["id"])
        collector.ledger.batch_created(self.submission.id, self.batch_id)
        return batch


class BatchCollector:
    def __init__(self, name: str, settings: BatchSettings, api: BatchAPI, run_dir: Path, max_rounds: int):
        self.name = name
        self.settings = settings
        self.api = api
        self.run_dir = run_dir
        self._ledger: SubmissionLedger | None = None
        self.max_rounds = max_rounds
        self._open: dict[str, OpenBatch] = {}
        self._joining: dict[str, OpenBatch] = {}
        """custom_id -> the not yet submitted batch carrying it, so an identical call joins its line."""
        self._pending: dict[int, PendingBatch] = {}
        self._submitting: set[asyncio.Task[None]] = set()
        self.waiting = 0
        """Calls waiting for a batch's answer now (the progress bar's 'records waiting on batches')."""
        self.submitted = 0
        self.lines_submitted = 0
        self.ended: dict[str, int] = {}
        self._whole_run: dict[str, Any] = {}
        self._closed = False

    @property
    def ledger(self) -> SubmissionLedger:
        """Opened at the first call, once the run directory is set up (or emptied by --overwrite)."""
        if self._ledger is None:
            if self._closed:
                raise ModelCallError(f"{self.name}: the run is stopping; no batch is submitted", retryable=False)
            self._ledger = SubmissionLedger(self.run_dir)
        return self._ledger

    async def answer(self, custom_id: str, endpoint: str, body: dict[str, Any]) -> Line:
        """The answer line for the call `custom_id`, waiting for whichever batch carries it."""
        self.waiting += 1
        try:
            while True:
                pending = await self._batch_carrying(custom_id, endpoint, body)
                line = await pending.answer(custom_id)
                if line is not None:
                    return line
                if self.ledger.rounds_unanswered(self.name, custom_id) >= self.max_rounds:  # in every part
                    raise ModelCallError(f"{self.name}: {self.max_rounds} batches ended without answering this "
                                         f"call (the last: {pending.batch_id}, {pending.status})", retryable=False)
        finally:
            self.waiting -= 1

    async def _batch_carrying(self, custom_id: str, endpoint: str, body: dict[str, Any]) -> PendingBatch:
        joining = self._joining.get(custom_id)
        if joining is None:
            submission = self.ledger.last_carrying(self.name, custom_id)
            if submission is not None:
                pending = self._follow(submission)
                if pending.pending or pending.task.exception() is not None or \
                        custom_id in pending.task.result():
                    return pending
            joining = self._join(custom_id, endpoint, body)
        return await asyncio.shield(joining.submitted)

    def forget(self, pending: PendingBatch) -> None:
        if self._pending.get(pending.submission.id) is pending:
            del self._pending[pending.submission.id]

    def _follow(self, submission: Submission) -> PendingBatch:
        pending = self._pending.get(submission.id)
        if pending is None:
            pending = self._pending[submission.id] = PendingBatch(submission, self)
        return pending

    def _join(self, custom_id: str, endpoint: str, body: dict[str, Any]) -> OpenBatch:
        batch = self._open.get(endpoint)
        if batch is None:
            batch = self._open[endpoint] = OpenBatch(endpoint)
            batch.timer = asyncio.get_running_loop().call_later(self.settings.max_wait_s, self._close, batch)
        batch.lines[custom_id] = body
        self._joining[custom_id] = batch
        if len(batch.lines) >= self.settings.max_requests:
            self._close(batch)
        return batch

    def _close(self, batch: OpenBatch) -> None:
        if batch.closed:
            return
        batch.closed = True
        if batch.timer is not None:
            batch.timer.cancel()
        if self._open.get(batch.endpoint) is batch:
            del self._open[batch.endpoint]
        task = asyncio.create_task(self._submit(batch))
        self._submitting.add(task)
        task.add_done_callback(self._submitting.discard)
        task.add_done_callback(lambda _: [self._joining.pop(key, None) for key in batch.lines])

    async def _submit(self, batch: OpenBatch) -> None:
        try:
            custom_ids = list(batch.lines)
            jsonl = b"".join(dumps_line({"custom_id": custom_id, "method": "POST", "url": batch.endpoint,
                                         "body": body}) for custom_id, body in batch.lines.items())
            file_id = await self.api.upload(jsonl, f"synthloom-{self.name}-{int(time.time())}.jsonl")
            number = self.ledger.file_uploaded(self.name, file_id, batch.endpoint,
                                               self.settings.completion_window, custom_ids)
            created = await self.api.create(file_id, batch.endpoint, self.settings.completion_window,
                                            {"synthloom_model": self.name})
            self.ledger.batch_created(number, str(created["id"]))
        except BaseException as error:
            if not batch.submitted.done():
                batch.submitted.set_exception(error if isinstance(error, Exception) else
                                              ModelCallError(f"{self.name}: batch submission stopped",
                                                             retryable=False))
            if not isinstance(error, Exception):
                raise
            return
        self.submitted += 1
        self.lines_submitted += len(custom_ids)
        log.info("model '%s': batch %s submitted with %d lines", self.name, created["id"], len(custom_ids))
        submission = Submission(number, self.name, file_id, batch.endpoint, self.settings.completion_window,
                                str(created["id"]), "pending", len(custom_ids), time.time())
        batch.submitted.set_result(self._follow(submission))

    def status(self) -> dict[str, Any]:
        """For the progress bar and the manifest: now, and over every part of the run (from the ledger)."""
        pending = [batch for batch in self._pending.values() if batch.pending]
        oldest = min((batch.submission.created for batch in pending), default=None)
        if self._ledger is not None:
            self._whole_run = self._ledger.summary(self.name)
        return {"waiting_calls": self.waiting, "pending": len(pending),
                "oldest_pending_s": round(time.time() - oldest, 1) if oldest else None,
                "this_part": {"submitted": self.submitted, "lines": self.lines_submitted,
                              "ended": dict(self.ended)},
                **self._whole_run}

    async def close(self, *, cancel: bool) -> list[str]:
        """Stop following batches; with `cancel`, ask the provider to cancel the pending ones. Returns the
        ids of batches left running (paid for: `--resume` collects their answers)."""
        self._closed = True
        for batch in list(self._open.values()):
            self._close_unsent(batch)
        for task in list(self._submitting):  # the ledger holds whatever of it reached the provider
            task.cancel()
        await asyncio.gather(*self._submitting, return_exceptions=True)
        left: list[str] = []
        for pending in self._pending.values():
            if not pending.pending:
                continue
            pending.task.cancel()
            if pending.batch_id is None:
                continue
            if cancel:
                try:
                    await self.api.cancel(pending.batch_id)
                    self.ledger.settled(pending.submission.id, "cancelled")
                except ModelCallError as error:
                    log.warning("model '%s': cancelling batch %s failed: %s", self.name, pending.batch_id,
                                one_line(error, 200))
                    left.append(pending.batch_id)
            else:
                left.append(pending.batch_id)
        await asyncio.gather(*(pending.task for pending in self._pending.values()), return_exceptions=True)
        await self.api.close()
        if self._ledger is None and (self.run_dir / BATCHES).exists():  # a part that sent nothing: earlier parts'
            self._ledger = SubmissionLedger(self.run_dir)
        if self._ledger is not None:
            self._whole_run = self._ledger.summary(self.name)  # the manifest is written after the models close
            self._ledger.close()
            self._ledger = None
        return left

    def _close_unsent(self, batch: OpenBatch) -> None:
        """A run that stops never submits the batch it was filling: its calls were never paid for."""
        batch.closed = True
        if batch.timer is not None:
            batch.timer.cancel()
        self._open.pop(batch.endpoint, None)
        if not batch.submitted.done():
            batch.submitted.cancel()


def _line(raw: bytes) -> Line | None:
    try:
        line = loads(raw)
    except ValueError:
        return None
    return line if isinstance(line, dict) and isinstance(line.get("custom_id"), str) else None


def _unanswered(line: Line) -> bool:
    error = line.get("error")
    return isinstance(error, dict) and error.get("code") in UNANSWERED_CODES and not line.get("response")

"""The output directory as a resumable ledger.

A record's lines are appended to the output files first and its id to journal.jsonl last. So after a
crash, kill -9, Ctrl-C or a full disk, every id in the journal is fully written, and any line whose id is
not in the journal (or that was cut mid-write) belongs to a record that will run again: `resume` removes
those lines before the run goes on. Every seed record ends in exactly one place: an output, dropped.jsonl
or failed.jsonl.

The journal's last word on an id wins: a record that failed and, retried by `--resume`, was written, is
written. Each journal line also carries the drop reason or failure type, so the manifest's totals come from
the journal and survive any number of resumed parts.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import OutputWriteError
from ..fast_json import dumps_line, loads
from ..graph.record_pool import POOL_DIR
from ..models.batch.ledger import BATCHES, SQLITE_JOURNAL
from .id_ledger import LEDGER, IdLedger

JOURNAL = "journal.jsonl"
FAILED = "failed.jsonl"
DROPPED = "dropped.jsonl"
MANIFEST = "manifest.json"
TRACES = "traces.jsonl"
CARD = "README.md"
REVIEWS = "reviews.jsonl"  # human reviews (synthloom studio); --overwrite deletes them with the records
LOCK = ".synthloom.lock"
TEMPORARY = ".tmp"
"""What a file is written as before it replaces its name (`os.replace`), so no reader sees half of it."""
OWN_FILES = (MANIFEST, CARD, REVIEWS, MANIFEST + TEMPORARY, CARD + TEMPORARY, LEDGER, POOL_DIR, BATCHES, SQLITE_JOURNAL)
"""What a run writes besides its data files and journal: in a directory without a journal, another's."""

WRITTEN = "written"
DROPPED_STATUS = "dropped"
FAILED_STATUS = "failed"
RETRYING = "retrying"
"""Written by a part that runs failed records again: they are no longer failed, nor yet settled."""
SET_ASIDE = ".failed-retrying.jsonl"
"""The failed.jsonl lines of records being retried, kept until a retry settles them: a retry that is
killed leaves them here, and a later `--no-retry-failed` puts them back instead of running them again."""


class JsonlWriter:
    """Append-only JSON lines.

    With `on_pending`, lines wait in memory until `flush_pending` (the runner flushes every writer once per
    event-loop tick, the journal last, so a journaled id's lines always reach the OS first); without it each
    write is flushed at once. A write that fails (a full disk, a read-only directory) raises
    `OutputWriteError`, takes back the part of it that landed (the file is cut to its length before) and
    breaks the writer: nothing more is written through it. So a write lands whole or not at all: the
    journal never holds half of a tick's ids while the runner counts none of them.
    """

    def __init__(self, path: Path, on_pending: Callable[[], None] | None = None):
        self.path = path
        self._handle: IO[bytes] | None = None
        self._broken = False
        self._on_pending = on_pending
        self._pending: list[bytes] = []

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        text = b"".join(dumps_line(row) for row in rows)
        if self._on_pending is None:
            self._write_now(text)
            return
        if self._broken:
            raise OutputWriteError(f"cannot write to {self.path}: an earlier write failed")
        if not self._pending:
            self._on_pending()
        self._pending.append(text)

    def flush_pending(self) -> None:
        if self._pending:
            text = b"".join(self._pending)
            self._pending.clear()
            self._write_now(text)

    def discard_pending(self) -> None:
        """Lines that must never land: the journal's, when the lines they vouch for did not."""
        self._pending.clear()

    def _write_now(self, text: bytes) -> None:
        if self._broken:
            raise OutputWriteError(f"cannot write to {self.path}: an earlier write failed")
        length = None
        try:
            if self._handle is None:
                self._handle = self.path.open("ab", buffering=0)  # no buffer that could land later
            length = os.fstat(self._handle.fileno()).st_size
            unwritten = memoryview(text)
            while unwritten:
                unwritten = unwritten[self._handle.write(unwritten):]
        except OSError as error:
            self._broken = True
            if length is not None:
                self._take_back(length)
            raise OutputWriteError(f"cannot write to {self.path}: {error.strerror or error}") from None

    def _take_back(self, length: int) -> None:
        assert self._handle is not None
        try:
            os.ftruncate(self._handle.fileno(), length)
        except OSError:
            pass  # what stays is a cut last line, which `--resume` drops

    def sync(self) -> None:
        """Flush and fsync, so a power loss after this keeps what was written."""
        if self._handle is not None and not self._broken:
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError:
                self._broken = True

    def close(self) -> None:
        """Write what is pending (whole records: the runner flushes the journal after the data), then sync."""
        try:
            self.flush_pending()
        except OutputWriteError:
            pass  # reported where the run noticed it first; closing must not hide the outcome
        if self._handle is not None:
            try:
                if not self._broken:
                    self.sync()
                self._handle.close()
            except OSError:
                pass
            self._handle = None


class Journal:
    """journal.jsonl: a header per part of the run, then `{"id", "status", "reason"}` per settled record.

    Settled ids are kept in an `IdLedger` on disk, not in memory, however long the run."""

    def __init__(self, directory: Path, config_hash: str, on_pending: Callable[[], None] | None = None):
        self.directory = directory
        self.config_hash = config_hash
        self.ledger: IdLedger | None = None
        self.previous: Counter[str] = Counter()
        """Statuses of the done ids, from earlier parts."""
        self.previous_reasons: dict[str, Counter[str]] = {DROPPED_STATUS: Counter(), FAILED_STATUS: Counter()}
        self.writer = JsonlWriter(directory / JOURNAL, on_pending)

    @property
    def path(self) -> Path:
        return self.directory / JOURNAL

    def holds_a_run(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def open_ledger(self) -> IdLedger:
        if self.ledger is None:
            self.ledger = IdLedger(self.directory)
        return self.ledger

    def load(self, *, retry_failed: bool, announce_retries: bool = True) -> None:
        """Read what earlier parts settled into the ledger: the ids this part will not run again.

        Retrying failed records, the journal first says so (`retrying`) for each of them; only then may
        `start` take their lines out of failed.jsonl. So if this part dies before it settles them, the
        journal does not claim a failure whose line is gone (a later `--no-retry-failed` would lose it)."""
        _truncate_partial_last_line(self.path)
        ledger = self.open_ledger()
        ledger.load_done(self._settled_entries(), retrying=RETRYING)
        if retry_failed and announce_retries:  # (not when only reading, as `run --ray` does before shards go on)
            for batch in ledger.reasons_with_status(FAILED_STATUS):
                self.writer.write([{"id": record_id, "status": RETRYING, **({"reason": reason} if reason else {})}
                                   for record_id, reason in batch])
                self.writer.flush_pending()
                ledger.count_retry([record_id for record_id, _ in batch])
            _move_failed_lines(self.directory, ledger, aside=True)
        elif not retry_failed:
            # a retry that was cut short: its records are failed again, with their lines put back
            _move_failed_lines(self.directory, ledger, aside=False)
            for batch in ledger.reasons_with_status(RETRYING):
                self.writer.write([{"id": record_id, "status": FAILED_STATUS, **({"reason": reason} if reason else {})}
                                   for record_id, reason in batch])
                self.writer.flush_pending()
            ledger.change_status(RETRYING, FAILED_STATUS)
        ledger.keep_only({WRITTEN, DROPPED_STATUS} if retry_failed else {WRITTEN, DROPPED_STATUS, FAILED_STATUS})
        for status, reason, records in ledger.tally():
            self.previous[status] += records
            if status in self.previous_reasons:
                self.previous_reasons[status][reason or "unknown"] += records

    def start(self, *, resuming: bool, data_files: list[str], started: float | None = None) -> dict[str, int]:
        """Open the ledger for this part; returns the lines kept per data file (for counting as we write).
        `refusals.admit` has cleared or refused the directory; on a resume, `load` has run first."""
        ledger = self.open_ledger()
        kept = dict.fromkeys(data_files, 0)
        if resuming:
            for name in data_files:
                kept[name] = _keep_lines_of(self.directory / name, status_of_file(name), ledger)
        self.writer.write([{"config_hash": self.config_hash, "part_started": started}])
        self.writer.flush_pending()
        return kept

    def _entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: its record was not done
                if isinstance(entry, dict):
                    yield entry

    def _settled_entries(self) -> Iterator[tuple[str, str, str | None]]:
        for entry in self._entries():
            if "id" not in entry:
                continue  # a part's header (`refusals.refuse_a_changed_graph` read the first)
            reason = entry.get("reason")
            yield str(entry["id"]), str(entry.get("status")), None if reason is None else str(reason)

    def times_retried(self, record_id: str) -> int:
        """How many parts took `record_id` up again after it failed: a batch model's calls for it are new
        calls then (`models/batch/client.py`), not the failed attempts the batch ledger still answers."""
        return 0 if self.ledger is None else self.ledger.times_retried(record_id)

    @property
    def done_count(self) -> int:
        return 0 if self.ledger is None else self.ledger.done_count

    def mark(self, record_id: str, status: str, reason: str | None = None) -> None:
        entry = {"id": record_id, "status": status}
        if reason is not None:
            entry["reason"] = reason
        self.writer.write([entry])

    def close(self) -> None:
        self.writer.close()
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None


def data_files(outputs: list[str]) -> list[str]:
    """The files a run appends records to, in either run path: each output's, then the failure, drop and
    trace files."""
    return [*(f"{name}.jsonl" for name in outputs), FAILED, DROPPED, TRACES]


def present(path: Path) -> bool:
    """A file, folder or symbolic link (a dangling one too: writing through it would create its target)."""
    return path.exists() or path.is_symlink()


def status_of_file(name: str) -> str | None:
    """Which journaled outcome a data file's lines belong to; None: any (traces of every settled record)."""
    if name == TRACES:
        return None
    return {FAILED: FAILED_STATUS, DROPPED: DROPPED_STATUS}.get(name, WRITTEN)


def line_id(row: Any) -> Any:
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("metadata"), dict):
        return row["metadata"].get("id")
    return row.get("id")


def _keep_lines_of(path: Path, status: str | None, ledger: IdLedger) -> int:
    """Keep the lines of records whose journaled outcome is this file's; drop the rest (records that run
    again, or a failure that a retry turned into a written record). Returns how many lines stay."""
    if not path.exists():
        return 0
    kept_lines = 0
    temporary = path.with_name(path.name + ".resume-tmp")
    with path.open(encoding="utf-8", errors="replace") as source, temporary.open("w", encoding="utf-8") as target:
        for line in source:
            try:
                record_id = line_id(loads(line))
            except json.JSONDecodeError:
                continue
            outcome = ledger.status(str(record_id)) if record_id is not None else None
            if outcome is not None and status in (None, outcome):
                target.write(line if line.endswith("\n") else line + "\n")
                kept_lines += 1
    os.replace(temporary, path)
    return kept_lines


def _move_failed_lines(directory: Path, ledger: IdLedger, *, aside: bool) -> None:
    """`aside`: the failed.jsonl lines of records to retry (journaled `retrying`) move to SET_ASIDE, joining
    those an earlier, cut-short retry left there. Otherwise the SET_ASIDE lines of records still `retrying`
    go back to failed.jsonl. Each file is rewritten whole and replaced; a line is never in both once done
    (an id already in the target is not copied again, so a kill between the two replaces is harmless)."""
    failed, set_aside = directory / FAILED, directory / SET_ASIDE
    source, target = (failed, set_aside) if aside else (set_aside, failed)
    if not source.exists():
        return
    moving = {FAILED_STATUS, RETRYING} if aside else {RETRYING}

    def retried(line: str) -> str | None:
        try:
            record_id = line_id(loads(line))
        except json.JSONDecodeError:
            return None
        return str(record_id) if record_id is not None and ledger.status(str(record_id)) in moving else None

    present: set[str] = set()
    kept_target: list[str] = []
    if target.exists():
        with target.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                record_id = retried(line)
                if record_id is not None or not aside:
                    kept_target.append(line if line.endswith("\n") else line + "\n")
                    if record_id is not None:
                        present.add(record_id)
    target_temporary = target.with_name(target.name + ".tmp")
    source_temporary = source.with_name(source.name + ".tmp")
    with source.open(encoding="utf-8", errors="replace") as lines, \
            target_temporary.open("w", encoding="utf-8") as to_target, \
            source_temporary.open("w", encoding="utf-8") as to_source:
        to_target.writelines(kept_target)
        for line in lines:
            line = line if line.endswith("\n") else line + "\n"
            record_id = retried(line)
            if record_id is None:
                if aside:
                    to_source.write(line)
            elif record_id not in present:
                to_target.write(line)
                present.add(record_id)
    os.replace(target_temporary, target)
    if aside:
        os.replace(source_temporary, source)
    else:
        source_temporary.unlink()
        source.unlink()


def _truncate_partial_last_line(path: Path, block_size: int = 1 << 20) -> None:
    """Cut a last line that a kill left without its newline, and nothing before it: the last newline is
    searched for block by block back from the end, however long that line is."""
    with path.open("rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return
        while end > 0:
            start = max(0, end - block_size)
            handle.seek(start)
            cut = handle.read(end - start).rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                return
            end = start
        handle.truncate(0)


def sync_directory(directory: Path) -> None:
    """fsync the directory itself, so files created in it survive a power loss too."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)

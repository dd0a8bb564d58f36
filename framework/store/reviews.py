"""Human reviews of a run's records, kept in an append-only `<run>/reviews.jsonl` beside the outputs.

The outputs are never rewritten: a review is one line naming the output and the record's id, and the last
line about a record wins. So reviews survive a restart of the studio and a `--resume` of the run (which
keeps the lines of journaled records as they are), and undoing a review is one more line. Readers stream
the output and apply the reviews as they go; only the reviews themselves (a person's work: thousands at
most) are held in memory.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .journal import REVIEWS

VERDICTS = ("accept", "reject")
EDITABLE = ("messages", "chosen", "rejected")
"""The parts of a record an edit may replace: the assistant turns of a chat, a side of a DPO pair."""


@dataclass(frozen=True)
class Review:
    output: str
    id: str
    verdict: str
    note: str = ""
    edit: dict[str, Any] = field(default_factory=dict)   # part -> its new message list (edited turns applied)
    at: str = ""


def record_key(record: dict[str, Any], line: int) -> str:
    """What a review names a record by: its `metadata.id` (stable across `--resume`), else its own `id` (failed,
    dropped and trace lines), else its line number."""
    metadata = record.get("metadata")
    if isinstance(metadata, dict) and metadata.get("id") is not None:
        return str(metadata["id"])
    if record.get("id") is not None:
        return str(record["id"])
    return f"line-{line}"


def append_review(directory: str | Path, review: Review) -> Review:
    """Append one review (stamped with the time) as one whole line, flushed to disk before returning."""
    if review.verdict not in VERDICTS:
        raise ConfigError(f"a review's verdict is one of {', '.join(VERDICTS)}, not '{review.verdict}'")
    unknown = sorted(set(review.edit) - set(EDITABLE))
    if unknown:
        raise ConfigError(f"an edit may replace {', '.join(EDITABLE)}, not {', '.join(unknown)}")
    stamped = Review(review.output, review.id, review.verdict, review.note, review.edit,
                     datetime.now(UTC).isoformat(timespec="seconds"))
    line = (json.dumps(asdict(stamped), ensure_ascii=False) + "\n").encode("utf-8")
    handle = os.open(Path(directory) / REVIEWS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(handle, line)  # one write of one line with O_APPEND: two studios never interleave a line
        os.fsync(handle)
    finally:
        os.close(handle)
    return stamped


def latest_reviews(directory: str | Path, output: str | None = None) -> dict[tuple[str, str], Review]:
    """The last review of each (output, id), read streaming. A line cut short by a crash (the last one, with
    no newline) is ignored; any other unreadable line is a mistake worth naming."""
    path = Path(directory) / REVIEWS
    found: dict[tuple[str, str], Review] = {}
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return found
    with handle:
        for number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
                review = Review(str(row["output"]), str(row["id"]), str(row["verdict"]), str(row.get("note", "")),
                                dict(row.get("edit") or {}), str(row.get("at", "")))
            except (ValueError, KeyError, TypeError):
                if not line.endswith("\n"):
                    break  # an append cut by a crash
                raise ConfigError(f"{path}:{number}: not a review line; remove or fix that line") from None
            if output is None or review.output == output:
                found[review.output, review.id] = review
    return found


def apply_review(record: dict[str, Any], review: Review | None) -> dict[str, Any] | None:
    """The record as its review leaves it: None when rejected or never accepted, edits applied otherwise."""
    if review is None or review.verdict != "accept":
        return None
    if not review.edit:
        return record
    return {**record, **{part: value for part, value in review.edit.items() if part in EDITABLE}}


def reviewed_records(directory: str | Path, output: str) -> Iterator[dict[str, Any]]:
    """An output's accepted records, edits applied, in file order (rejected and unreviewed ones left out)."""
    reviews = latest_reviews(directory, output)
    path = Path(directory) / f"{output}.jsonl"
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            record = json.loads(line)
            kept = apply_review(record, reviews.get((output, record_key(record, number))))
            if kept is not None:
                yield kept


def write_reviewed(output_dir: str | Path, output: str, to: Path) -> int:
    """Write an output's accepted records (edits applied) to `to`; return how many."""
    count = 0
    with to.open("w", encoding="utf-8") as handle:
        for record in reviewed_records(output_dir, output):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def review_counts(directory: str | Path) -> dict[str, dict[str, int]]:
    """Per output: records accepted, rejected, and edited (accepted with an edit), by their last review."""
    counts: dict[str, Counter[str]] = {}
    for (output, _), review in latest_reviews(directory).items():
        tally = counts.setdefault(output, Counter())
        tally["accepted" if review.verdict == "accept" else "rejected"] += 1
        if review.verdict == "accept" and review.edit:
            tally["edited"] += 1
    return {output: {key: tally[key] for key in ("accepted", "rejected", "edited")}
            for output, tally in sorted(counts.items())}

"""What a finished run holds, read in one streamed pass so a report of a huge run needs little memory.

Lengths and numeric metadata go into streamed histograms; texts for the diversity measures go into a
seeded reservoir, so the same run always gives the same figures. The corpus figures live in `metrics.py`,
over the per-text measures of `synthloom.measures`, shared with the `tagger` node.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.trace import TRACES
from ..errors import SynthloomError
from ..fast_json import loads
from ..measures import words
from ..store.journal import DROPPED, FAILED, MANIFEST
from .metrics import TEXT_SAMPLE, Diversity, Reservoir, StreamHistogram, measure

EXAMPLES = 10          # example records shown per output
MAX_FIELDS = 12        # numeric metadata fields followed per output
MAX_TRACE_STEPS = 200  # steps shown per traced record
FALLBACK_TEXT_KEYS = ("text", "output", "response", "answer", "completion")


class ReportError(SynthloomError):
    """The directory cannot be reported on (no manifest, unreadable manifest)."""


# -- what a record holds ----------------------------------------------------------------------------

def message_text(value: Any, role: str = "assistant") -> str | None:
    """A message list's `role` turns joined, or a plain string as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [str(m.get("content", "")) for m in value if isinstance(m, dict) and m.get("role") == role]
        return "\n".join(parts) if parts else None
    return None


def main_text(record: dict[str, Any]) -> tuple[str, str] | None:
    """(which field, the text) a record was made for: the assistant turns, the chosen reply, or a text."""
    if "messages" in record:
        text = message_text(record["messages"])
        return ("assistant messages", text) if text is not None else None
    if "chosen" in record:
        text = message_text(record["chosen"])
        return ("chosen", text) if text is not None else None
    for key in FALLBACK_TEXT_KEYS:
        if isinstance(record.get(key), str):
            return key, record[key]
    return None


def example_row(record: dict[str, Any]) -> dict[str, str]:
    """The columns shown for one example record, by record shape."""
    if "messages" in record:
        return {"user": message_text(record["messages"], "user") or "",
                "assistant": message_text(record["messages"]) or ""}
    if "chosen" in record:
        prompt = record.get("prompt")
        return {"prompt": message_text(prompt, "user") or "" if isinstance(prompt, list) else str(prompt or ""),
                "chosen": message_text(record["chosen"]) or "", "rejected": message_text(record.get("rejected")) or ""}
    found = main_text(record)
    if found:
        return {found[0]: found[1]}
    shown = {key: value for key, value in record.items() if key != "metadata"}
    return {"record": json.dumps(shown, ensure_ascii=False, default=str)}


def numeric_fields(metadata: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numbers in a record's metadata, nested dicts as dotted names (booleans are not scores)."""
    if not isinstance(metadata, dict):
        return
    for key, value in metadata.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            yield name, float(value)
        elif isinstance(value, dict) and not prefix:
            yield from numeric_fields(value, f"{name}.")


# -- one output, one run ----------------------------------------------------------------------------

@dataclass
class OutputSummary:
    name: str
    records: int = 0
    unreadable: int = 0
    every: int = 1   # the figures below come from every `every`-th line (1: all of them)
    text_field: str | None = None
    lengths: StreamHistogram = field(default_factory=StreamHistogram)
    rejected_lengths: StreamHistogram = field(default_factory=StreamHistogram)
    numbers: dict[str, StreamHistogram] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)
    example_ids: list[str | None] = field(default_factory=list)   # metadata.id of each example record
    diversity: Diversity | None = None


def summarise_output(path: Path, name: str, embeddings: bool = True, expected: int = 0,
                     parse_at_most: int | None = None) -> OutputSummary:
    """Figures of one output file. With `parse_at_most` (and `expected`, the manifest's line count) only
    every k-th line is parsed, so a card at ten million records costs seconds, not minutes; every line is
    still counted."""
    summary = OutputSummary(name)
    if parse_at_most and expected > parse_at_most:
        summary.every = -(-expected // parse_at_most)
    reservoir = Reservoir(TEXT_SAMPLE)
    for record in _read_jsonl(path, summary, summary.every):
        if len(summary.examples) < EXAMPLES:
            summary.examples.append(example_row(record))
            metadata = record.get("metadata")
            summary.example_ids.append(str(metadata["id"]) if isinstance(metadata, dict) and "id" in metadata
                                       else None)
        found = main_text(record)
        if found:
            summary.text_field = summary.text_field or found[0]
            summary.lengths.add(len(words(found[1])))
            reservoir.add(found[1])
        rejected = message_text(record.get("rejected")) if "rejected" in record else None
        if rejected is not None:
            summary.rejected_lengths.add(len(words(rejected)))
        for key, value in numeric_fields(record.get("metadata")):
            histogram = summary.numbers.get(key)
            if histogram is None and len(summary.numbers) < MAX_FIELDS:
                histogram = summary.numbers[key] = StreamHistogram()
            if histogram is not None:
                histogram.add(value)
    summary.diversity = measure(reservoir, embeddings)
    return summary


def _read_jsonl(path: Path, summary: OutputSummary | None = None, every: int = 1) -> Iterator[dict[str, Any]]:
    """The objects of a JSON-lines file; with `summary`, its lines are counted (every one, though only each
    `every`-th is parsed) and so are the unreadable ones among those parsed."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        for index, line in enumerate(handle):
            if summary is not None and line.strip():
                summary.records += 1
            if index % every:
                continue
            try:
                row = loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict):
                yield row
            elif summary is not None and line.strip():
                summary.unreadable += 1
                summary.records -= 1


def read_traces(path: Path, ids: set[str], max_steps: int = MAX_TRACE_STEPS) -> dict[str, list[dict[str, Any]]]:
    """The trace lines (traces.jsonl, from `run --trace`) of the records `ids`, in step order."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for row in _read_jsonl(path):
        record_id = row.get("id")
        if isinstance(record_id, str) and record_id in ids and len(steps.setdefault(record_id, [])) < max_steps:
            steps[record_id].append(row)
    for rows in steps.values():
        rows.sort(key=lambda row: row["step"] if isinstance(row.get("step"), int) else 0)
    return steps


@dataclass
class RunSummary:
    directory: Path
    manifest: dict[str, Any]
    outputs: list[OutputSummary]
    failed: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    traces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # example records' steps

    @property
    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.manifest["counts"]
        return counts

    def reasons(self, key: str) -> list[tuple[str, str, int]]:
        """counts.drop_reasons or counts.failure_types as (node, reason, count), largest first."""
        rows = []
        for label, count in (self.counts.get(key) or {}).items():
            node, _, reason = str(label).partition(": ")
            rows.append((node, reason, count if isinstance(count, int) else 0))
        return sorted(rows, key=lambda row: (-row[2], row[0], row[1]))

    def duplicates(self) -> list[tuple[str, int, int]]:
        """(dedup node, duplicates dropped, records it saw): drop reasons that name a duplicate."""
        per_node: Counter[str] = Counter()
        for node, reason, count in self.reasons("drop_reasons"):
            if "duplicate" in reason.lower():
                per_node[node] += count
        nodes = self.manifest.get("nodes") or {}
        return [(node, count, int((nodes.get(node) or {}).get("steps") or 0))
                for node, count in per_node.most_common()]


def read_run(directory: str | Path, parse_at_most: int | None = None) -> RunSummary:
    """Summarise a run's output directory. Raises `ReportError` when it holds no readable manifest.
    `parse_at_most`: parse only every k-th line of an output longer than that (as the card does)."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ReportError(f"{directory} has no {MANIFEST}; is it a run's output directory?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{manifest_path} is not readable JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ReportError(f"{manifest_path} does not hold a manifest object")
    _keep_dicts(manifest, ("counts", "nodes", "models", "concurrency"))
    _keep_dicts(manifest["counts"], ("outputs", "drop_reasons", "failure_types"))
    names = [str(name) for name in manifest["counts"]["outputs"] if _plain_name(str(name))]
    written = manifest["counts"]["outputs"]
    outputs = [summarise_output(directory / f"{name}.jsonl", name, parse_at_most=parse_at_most,
                                expected=int(written[name]) if isinstance(written[name], int) else 0)
               for name in names]
    shown = {record_id for output in outputs for record_id in output.example_ids if record_id is not None}
    return RunSummary(directory, manifest, outputs, _first(directory / FAILED), _first(directory / DROPPED),
                      read_traces(directory / TRACES, shown))


def _plain_name(name: str) -> bool:
    """An output name from the manifest names a file in the run dir, never a path elsewhere."""
    return bool(name) and Path(name).name == name and not name.startswith(".")


def _keep_dicts(parent: dict[str, Any], keys: tuple[str, ...]) -> None:
    """A hand-edited or foreign manifest may hold anything: sections that are not objects read as empty."""
    for key in keys:
        if not isinstance(parent.get(key), dict):
            parent[key] = {}


def _first(path: Path, count: int = EXAMPLES) -> list[dict[str, Any]]:
    rows = []
    for row in _read_jsonl(path):
        rows.append(row)
        if len(rows) >= count:
            break
    return rows

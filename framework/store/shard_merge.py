"""One run directory out of a run's shard directories (`run --ray`).

Each shard is an ordinary run in `<dir>/shards/<k>/` with its own journal. The run directory's
`<output>.jsonl`, `failed.jsonl`, `dropped.jsonl` (and `traces.jsonl`) are rebuilt from the shards by the
driver as each shard finishes and at the end: a line is copied only if its record's last journaled
outcome is that file's (exactly the lines a `--resume` of the shard would keep), and the new file replaces
the old in one rename. So the run's files hold every settled record exactly once, whatever was killed
when, and rebuilding again (after a `--resume`) never duplicates anything.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .journal import FAILED, JOURNAL, MANIFEST, line_id, status_of_file

SHARDS_DIR = "shards"
PLAN = "ray.json"


def shard_dir(root: Path, index: int) -> Path:
    return root / SHARDS_DIR / str(index)


def final_statuses(directory: Path) -> dict[str, str]:
    """Each record's last journaled outcome (a line cut by a kill is no outcome)."""
    statuses: dict[str, str] = {}
    path = directory / JOURNAL
    if not path.exists():
        return statuses
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and "id" in entry:
                statuses[str(entry["id"])] = str(entry.get("status"))
    return statuses


def merge_shards(root: Path, shards: list[Path], files: list[str]) -> dict[str, int]:
    """Rebuild each of `files` in `root` from the shard directories; returns the lines each now holds."""
    statuses = [final_statuses(directory) for directory in shards]
    counts: dict[str, int] = {}
    for name in files:
        if not any((directory / name).exists() for directory in shards):
            counts[name] = 0  # no shard wrote one (no failure, no drop): neither does a one-process run
            continue
        wanted = status_of_file(name)
        temporary = root / (name + ".merge-tmp")
        count = 0
        with temporary.open("w", encoding="utf-8") as target:
            for index, directory in enumerate(shards):
                part = directory / name
                if not part.exists():
                    continue
                with part.open(encoding="utf-8", errors="replace") as source:
                    for line in source:
                        try:
                            record_id = line_id(json.loads(line))
                        except json.JSONDecodeError:
                            continue  # cut by a kill: that record runs again
                        if record_id is None:
                            keep = name == FAILED and index == 0  # an unreadable seed row: shard 0 reports it
                        else:
                            outcome = statuses[index].get(str(record_id))
                            keep = outcome is not None and wanted in (None, outcome)
                        if keep:
                            target.write(line if line.endswith("\n") else line + "\n")
                            count += 1
            target.flush()
            os.fsync(target.fileno())
        os.replace(temporary, root / name)
        counts[name] = count
    return counts


def read_shard_manifest(root: Path, index: int) -> dict[str, Any] | None:
    try:
        data = json.loads((shard_dir(root, index) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_PERCENTILES = {"latency_s", "step_seconds"}
_BOUNDS: dict[str, Callable[[Any, Any], Any]] = {"min": min, "max": max, "oldest_pending_s": max}
"""Figures that bound rather than count (a batch model's fewest and most lines per batch, its oldest
pending batch's age): the run's is the extreme of its shards', not their sum."""


def add_figures(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Shard figures added key by key; percentiles are not additive, so the slowest shard's are kept;
    bounds keep the extreme; lists (the batches each shard left running) are joined."""
    merged = dict(total)
    for key, value in part.items():
        before = total.get(key)
        if key in _PERCENTILES and isinstance(value, dict):
            merged[key] = {name: max(filter(None, [value.get(name), (before or {}).get(name)]), default=None)
                           for name in {*value, *(before or {})}}
        elif key in _BOUNDS and _is_number(value) and _is_number(before):
            merged[key] = _BOUNDS[key](before, value)
        elif isinstance(value, dict) and isinstance(before, dict):
            merged[key] = add_figures(before, value)
        elif _is_number(value) and _is_number(before):
            merged[key] = round(before + value, 6) if isinstance(before + value, float) else before + value
        elif isinstance(value, list) and isinstance(before, list):
            merged[key] = before + value
        elif before is None:
            merged[key] = value
    return merged


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


STATUS_ORDER = ["aborted", "failed", "interrupted", "running", "completed"]


def run_status(statuses: list[str]) -> str:
    """The run's status is its worst shard's."""
    return min(statuses, key=lambda status: STATUS_ORDER.index(status) if status in STATUS_ORDER else 0,
               default="completed")


def combine_counts(manifests: list[dict[str, Any]], outputs: dict[str, int]) -> dict[str, Any]:
    counts: dict[str, Any] = {"seeded": 0, "written": 0, "failed": 0, "dropped": 0, "resumed_from_journal": 0}
    reasons: dict[str, Counter[str]] = {"drop_reasons": Counter(), "failure_types": Counter()}
    for manifest in manifests:
        shard_counts = manifest.get("counts", {})
        for key in counts:
            counts[key] += int(shard_counts.get(key, 0))
        for key, counter in reasons.items():
            counter.update(shard_counts.get(key) or {})
    return {**counts, "outputs": outputs, **{key: dict(counter) for key, counter in reasons.items()}}

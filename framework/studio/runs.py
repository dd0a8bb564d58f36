"""The run directories the studio serves, found under the folders it was given, and what each holds.

A run is addressed by a short key (its folder's name, made unique), never by a path from the URL, so a
request can reach only the runs found here. What a run says about itself comes from its manifest (which a
run still going rewrites every few seconds) and its journal (appended per record, read incrementally for
live progress).
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store.journal import DROPPED, FAILED, JOURNAL, MANIFEST, REVIEWS, TRACES
from ..store.reviews import review_counts

STALE_SECONDS = 60  # a "running" run whose journal and manifest have not moved for this long has stopped
NOT_OUTPUTS = {JOURNAL, TRACES, REVIEWS, FAILED, DROPPED}


@dataclass
class Run:
    key: str
    path: Path

    def manifest(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def outputs(self, manifest: dict[str, Any] | None = None) -> list[str]:
        """The run's outputs: those its manifest declares, then any other output file present."""
        declared = list(((manifest or self.manifest()).get("counts") or {}).get("outputs") or {})
        present = sorted(item.stem for item in self.path.glob("*.jsonl") if item.name not in NOT_OUTPUTS)
        return [name for name in [*declared, *(p for p in present if p not in declared)]
                if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", name)]

    def files(self) -> list[str]:
        """Every file a records view may show: the outputs, then failed and dropped when there."""
        return [*self.outputs(), *(name.removesuffix(".jsonl") for name in (FAILED, DROPPED)
                                   if (self.path / name).is_file())]

    @property
    def traced(self) -> bool:
        return (self.path / TRACES).is_file()


def is_run(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / JOURNAL).is_file()


def find_runs(roots: list[Path]) -> dict[str, Run]:
    """Each root that is a run, and each run folder directly inside a root, keyed by a unique name."""
    found: dict[str, Run] = {}
    for root in roots:
        candidates = [root] if is_run(root) else sorted(
            (child for child in _children(root) if is_run(child)), key=lambda child: child.name)
        for path in candidates:
            base = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.resolve().name).strip("._") or "run"
            key, number = base, 1
            while key in found:
                number += 1
                key = f"{base}-{number}"
            found[key] = Run(key, path)
    return found


def _children(root: Path) -> list[Path]:
    try:
        return [child for child in root.iterdir() if child.is_dir() and not child.is_symlink()]
    except OSError:
        return []


@dataclass
class JournalTail:
    """Counts of a journal's outcome lines, read from where the last look stopped."""

    offset: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, path: Path) -> Counter[str]:
        with self.lock:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return Counter()
            if size < self.offset:  # rewritten (a resume keeps only whole lines): count again
                self.offset, self.counts = 0, Counter()
            with path.open("rb") as handle:
                handle.seek(self.offset)
                for line in handle:
                    if not line.endswith(b"\n"):
                        break
                    self.offset += len(line)
                    try:
                        status = json.loads(line).get("status")
                    except (ValueError, AttributeError):
                        continue
                    if isinstance(status, str):
                        self.counts[status] += 1
            return Counter(self.counts)


_TAILS: dict[Path, JournalTail] = {}


def summary(run: Run) -> dict[str, Any]:
    """What the runs page shows of a run: status, counts, drop reasons, models' usage, and progress."""
    manifest = run.manifest()
    counts = _dict(manifest.get("counts"))
    journal = run.path / JOURNAL
    settled = _TAILS.setdefault(journal.resolve(), JournalTail()).read(journal)
    status = str(manifest.get("status") or ("running" if journal.exists() else "unknown"))
    moved = max((_mtime(run.path / name) for name in (JOURNAL, MANIFEST)), default=0.0)
    if status == "running" and time.time() - moved > STALE_SECONDS:
        status = "stopped"  # killed without a word: `--resume` finishes it
    models = _dict(manifest.get("models"))
    usage = {name: {"calls": _number(stats.get("calls")),
                    "tokens": _number(stats.get("prompt_tokens")) + _number(stats.get("completion_tokens")),
                    "cost_usd": float(stats.get("cost_usd") or 0.0)}
             for name, stats in models.items() if isinstance(stats, dict)}
    reasons, failures = _dict(counts.get("drop_reasons")), _dict(counts.get("failure_types"))
    return {
        "key": run.key, "path": str(run.path), "graph": str(manifest.get("graph") or ""), "status": status,
        "message": str(manifest.get("message") or ""), "started": str(manifest.get("started") or ""),
        "elapsed_s": float(manifest.get("elapsed_s") or 0.0),
        "seeded": _number(counts.get("seeded")),
        "written": max(_number(counts.get("written")), settled["written"]),
        "failed": _number(counts.get("failed")), "dropped": max(_number(counts.get("dropped")), settled["dropped"]),
        "settled": settled["written"] + settled["dropped"] + settled["failed"],
        "outputs": {name: _number(_dict(counts.get("outputs")).get(name)) for name in run.outputs(manifest)},
        "drop_reasons": sorted(((str(k), _number(v)) for k, v in reasons.items()), key=lambda kv: -kv[1]),
        "failure_types": sorted(((str(k), _number(v)) for k, v in failures.items()), key=lambda kv: -kv[1]),
        "models": usage, "traced": run.traced, "reviews": review_counts(run.path),
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0

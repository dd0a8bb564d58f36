"""manifest.json: what a run did, in numbers, next to its outputs."""
from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scheduler import Runner

from .journal import MANIFEST


def _utc(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, tz=UTC).isoformat(timespec="seconds") if stamp else None


def build_manifest(runner: Runner) -> dict[str, Any]:
    counts = runner.counts
    previous = runner.journal.previous
    elapsed = (runner.ended or time.time()) - runner.started
    cache = runner.models.cache
    return {
        "graph": runner.graph.name,
        "config_hash": runner.graph.loaded.hash,
        "status": runner.status,
        "message": runner.message,
        "started": _utc(runner.started),
        "ended": _utc(runner.ended),
        "elapsed_s": round(elapsed, 3),
        "counts": {
            "seeded": counts.seeded + counts.skipped,
            "written": counts.written + previous["written"],
            "failed": counts.failed + previous["failed"],
            "dropped": counts.dropped + previous["dropped"],
            "resumed_from_journal": counts.skipped,
            "outputs": runner.written_per_output(),
            "drop_reasons": dict(counts.drop_reasons),
            "failure_types": dict(counts.failure_types),
        },
        "max_in_flight": runner.max_in_flight,
        "nodes": {name: stats.as_dict() for name, stats in runner.ctx.node_stats.items()},
        "models": {name: {**usage.as_dict(), **runner.models.adaptations(name)}
                   for name, usage in runner.models.usage.items()},
        "concurrency": runner.models.concurrency(),
        "cache": ({"path": str(cache.path), "hits": cache.hits, "misses": cache.misses} if cache else None),
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    os.replace(temporary, directory / MANIFEST)

"""manifest.json: what a run did, in numbers, next to its outputs."""
from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.runner import Runner
    from ..graph.runnable import Graph

from ..config.schema import DEFAULT_GGUF_NAME, ModelConfig
from ..sandbox.redact import redact, redact_url
from .journal import MANIFEST, TEMPORARY


def _utc(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, tz=UTC).isoformat(timespec="seconds") if stamp else None


def build_manifest(runner: Runner) -> dict[str, Any]:
    """The whole run, all resumed parts together: counts from the journal, calls/tokens/elapsed added to
    the figures the previous part's manifest left; latency percentiles are this part's where it has any."""
    counts = runner.counts
    totals = runner.totals()
    previous = runner.previous_manifest
    cache = runner.models.cache
    nodes = {name: stats.as_dict() for name, stats in runner.ctx.node_stats.items()}
    models = {name: {**usage.as_dict(), **runner.models.adaptations(name)}
              for name, usage in runner.models.usage.items()}
    return manifest_of(
        runner.graph, status=runner.status, message=runner.message, started=runner.started, ended=runner.ended,
        previous=previous,
        counts={"seeded": counts.seeded + counts.skipped, "written": totals["written"], "failed": totals["failed"],
                "dropped": totals["dropped"], "resumed_from_journal": counts.skipped,
                "outputs": dict(runner.output_counts), "drop_reasons": totals["drop_reasons"],
                "failure_types": totals["failure_types"]},
        part_counts={"seeded": counts.seeded, "written": counts.written, "failed": counts.failed,
                     "dropped": counts.dropped},
        max_in_flight=runner.max_in_flight,
        nodes=_accumulate(previous.get("nodes") or {}, nodes),
        models=_accumulate(previous.get("models") or {}, models),
        concurrency=runner.models.concurrency(),
        batches=runner.models.batches(),
        cache={"path": str(cache.path), "hits": cache.hits, "misses": cache.misses} if cache else None,
        **_tool_threads(runner))


def _tool_threads(runner: Runner) -> dict[str, Any]:
    """`tool_threads`: each python tools entry's threads, the calls that outlived their timeout in this
    part of the run (`abandoned`) and those still running (`still_hung`); absent without python tools."""
    figures = runner.ctx.tools.thread_figures()
    return {"tool_threads": figures} if figures else {}


def manifest_of(graph: Graph, *, status: str, message: str, started: float, ended: float | None,
                previous: dict[str, Any], counts: dict[str, Any], part_counts: dict[str, Any],
                max_in_flight: int, nodes: dict[str, Any], models: dict[str, Any], concurrency: dict[str, Any],
                cache: dict[str, Any] | None, batches: dict[str, Any] | None = None,
                part_extra: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
    """The one manifest builder, from a run's figures: a one-process run's (`build_manifest`) or the sum
    of a `run --ray`'s shards (the driver, which adds `part_extra` to this part and `extra` at the end),
    so both write the same fields. `counts`, `nodes`, `models`: the whole run's; `part_counts`, `started`,
    `ended`: this part's, its elapsed time added to the previous parts'. `batches`: only when a model
    sends provider batches."""
    part_elapsed = (ended or time.time()) - started
    part = {"started": _utc(started), "ended": _utc(ended), "elapsed_s": round(part_elapsed, 3),
            "status": status, **part_counts, **(part_extra or {})}
    return {
        "graph": graph.name,
        "config_hash": graph.loaded.hash,
        "status": status,
        "message": message,
        "started": previous.get("started") or _utc(started),
        "ended": _utc(ended),
        "elapsed_s": round(float(previous.get("elapsed_s") or 0.0) + part_elapsed, 3),
        "counts": counts,
        "parts": [*previous.get("parts", []), part],
        "max_in_flight": max_in_flight,
        "nodes": nodes,
        "models": models,
        "concurrency": concurrency,
        **({"batches": batches} if batches else {}),
        "cache": cache,
        **card_facts(graph),
        **extra,
    }


def card_facts(graph: Graph) -> dict[str, Any]:
    """What the dataset card (README.md) says about how the data was made, kept in the manifest so that
    `synthloom card DIR` rebuilds the same card (one-process and `run --ray` manifests alike)."""
    return {
        "graph_file": str(Path(graph.loaded.source_map.file).resolve()),
        "output_formats": {output.name: output.format for output in graph.config.outputs},
        "language": list(graph.config.language),
        "model_settings": {name: public_settings(model) for name, model in graph.config.models.items()},
    }


def public_settings(model: ModelConfig) -> dict[str, Any]:
    """A model's settings fit to publish: no API key (only the name of its variable), no credentials in a
    URL, no value of a setting whose name says it is a secret, at any depth (see `redact`)."""
    urls = model.base_url if isinstance(model.base_url, list) else [model.base_url] if model.base_url else []
    shown = [redact_url(url) for url in urls]
    name = model.model or (Path(model.path).name if model.path else None)
    if name is None and model.backend == "local":
        name = DEFAULT_GGUF_NAME  # the embedded default
    return {"backend": model.backend, "model": name,
            "base_url": shown if isinstance(model.base_url, list) else (shown[0] if shown else None),
            "params": redact(model.params),
            "api_key_env": model.api_key_env}


_PERCENTILES = {"latency_s", "step_seconds"}


def _accumulate(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Add this part's counters to the previous part's totals, key by key; percentiles are not additive,
    so they are this part's (or the previous part's where this one made no call)."""
    merged = dict(previous)
    for key, value in current.items():
        before = previous.get(key)
        if key in _PERCENTILES:
            has_samples = isinstance(value, dict) and value.get("p50") is not None
            merged[key] = value if has_samples or before is None else before
        elif isinstance(value, dict) and isinstance(before, dict):
            merged[key] = _accumulate(before, value)
        elif _is_number(value) and _is_number(before):
            total = before + value
            merged[key] = round(total, 6) if isinstance(total, float) else total
        else:
            merged[key] = value
    return merged


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_previous_manifest(path: Path) -> dict[str, Any]:
    """What the earlier parts of a resumed run added up to; empty when there is none (or it was cut)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / (MANIFEST + TEMPORARY)
    temporary.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    os.replace(temporary, directory / MANIFEST)

"""Seed rows, read lazily so that memory stays flat whatever the file size.

A row that cannot be read (bad JSON on line 17) is not skipped: it comes out as a `BadSeed`, which the
scheduler writes to failed.jsonl with its line number.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path
from typing import Any

from .config import SeedConfig
from .errors import ConfigError


@dataclass(frozen=True)
class BadSeed:
    where: str
    message: str


SeedItem = dict[str, Any] | BadSeed


def row_id(row: dict[str, Any], id_field: str) -> str:
    """The seed's own id when it has one, else a hash of the row: stable across runs and resumes."""
    value = row.get(id_field)
    if value is not None and value != "":
        return str(value)
    canonical = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def _jsonl(path: Path) -> Iterator[SeedItem]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield BadSeed(f"{path}:{number}", f"not valid JSON ({error.msg})")
                continue
            yield row if isinstance(row, dict) else {"value": row}


def _json(path: Path) -> Iterator[SeedItem]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"not valid JSON ({error.msg}, line {error.lineno}); use jsonl for big files",
                          where=str(path)) from None
    if isinstance(data, dict):
        data = data.get("data") or data.get("rows") or [data]
    for row in data:
        yield row if isinstance(row, dict) else {"value": row}


def _csv(path: Path) -> Iterator[SeedItem]:
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def _parquet(path: Path) -> Iterator[SeedItem]:
    import pyarrow.parquet as pq
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _hf(path: str, config: SeedConfig, base_dir: Path) -> Iterator[SeedItem]:
    import datasets
    local = base_dir / path
    if local.is_dir() and any((local / name).exists() for name in ("dataset_info.json", "dataset_dict.json")):
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded[config.source.split]
        yield from loaded
        return
    if local.exists():
        suffix = local.suffix.lstrip(".") if local.is_file() else "json"
        builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(suffix, suffix)
        files = str(local) if local.is_file() else str(local / "*")
        yield from datasets.load_dataset(builder, data_files=files, split=config.source.split, streaming=True)
        return
    yield from datasets.load_dataset(path, config.source.name, split=config.source.split, streaming=True)


def _raw_rows(config: SeedConfig, base_dir: Path) -> Iterator[SeedItem]:
    source = config.source
    if source.type == "none":  # records made from nothing (a sampler node fills them)
        indexes = range(source.rows) if source.rows is not None else count()
        return ({"index": index} for index in indexes)
    assert source.path is not None
    if source.type == "hf":
        return _hf(source.path, config, base_dir)
    path = (base_dir / source.path) if not Path(source.path).is_absolute() else Path(source.path)
    if not path.exists():
        raise ConfigError(f"seed file {path} does not exist; fix seed.source.path (relative to the graph "
                          f"file)", key="seed.source.path")
    readers = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}
    return readers[source.type](path)


def _shuffled(rows: Iterator[SeedItem], buffer_size: int, seed: int) -> Iterator[SeedItem]:
    """A streaming shuffle: a buffer of `buffer_size` rows, each output drawn at random from it."""
    rng = random.Random(seed)
    buffer: list[SeedItem] = []
    for row in rows:
        if len(buffer) < buffer_size:
            buffer.append(row)
            continue
        slot = rng.randrange(buffer_size)
        yield buffer[slot]
        buffer[slot] = row
    rng.shuffle(buffer)
    yield from buffer


def in_shard(item: SeedItem, config: SeedConfig) -> bool:
    """Stable across machines: the shard is a hash of the record id, not of the row's position."""
    if config.shard is None or isinstance(item, BadSeed):
        return config.shard is None or config.shard[0] == 0  # unreadable rows are reported by shard 0
    index, count = config.shard
    digest = hashlib.sha1(row_id(item, config.id_field).encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def read_seeds(config: SeedConfig, base_dir: Path, limit: int | None = None) -> Iterator[SeedItem]:
    """The seed rows, shuffled and capped first, then this shard's share: the shards of a run together
    hold exactly the records one process would run (`-n 100 --shard 0/4` is shard 0's part of 100 rows)."""
    rows = _raw_rows(config, base_dir)
    if config.shuffle:
        rows = _shuffled(rows, config.shuffle_buffer, config.seed)
    cap = limit if limit is not None else config.limit
    if cap is None and config.source.type == "none" and config.source.rows is None:
        raise ConfigError("a graph with no seed file needs seed.limit or seed.source.rows (or -n N)",
                          key="seed.limit")
    if cap is not None:
        rows = islice(rows, cap)
    if config.shard is not None:
        rows = (item for item in rows if in_shard(item, config))
    return rows


def seed_columns(config: SeedConfig, base_dir: Path) -> set[str]:
    """The columns of the first readable row, for validating templates before the run."""
    for item in islice(_raw_rows(config, base_dir), 20):
        if isinstance(item, dict):
            return set(item)
    return set()

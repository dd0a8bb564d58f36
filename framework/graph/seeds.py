"""Seed rows, read lazily so that memory stays flat whatever the file size.

A row that cannot be read (bad JSON on line 17) is not skipped: it comes out as a `BadSeed`, which the
scheduler writes to failed.jsonl with its line number.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..config.schema import SeedConfig
from ..errors import ConfigError
from ..sandbox.files import (
    MAX_FILE_BYTES,
    MAX_LINE_BYTES,
    LineTooLong,
    capped_lines,
    checked_path,
    open_graph_file,
    read_graph_text,
)


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


MAX_SEED_LINE = MAX_LINE_BYTES
"""Bytes one jsonl or csv row may take: a file without newlines must not be read whole into memory."""
SEED_KEY = "seed.source.path"


def _open_seed(path: Path, base_dir: Path) -> Any:
    return open_graph_file(path, base_dir, SEED_KEY, anywhere=True, what="seed file ")


def _jsonl(path: Path, base_dir: Path) -> Iterator[SeedItem]:
    with _open_seed(path, base_dir) as handle:
        for number in count(1):
            raw = handle.readline(MAX_SEED_LINE + 1)
            if not raw:
                return
            if len(raw) > MAX_SEED_LINE and not raw.endswith(b"\n"):
                yield BadSeed(f"{path}:{number}", f"a row longer than {MAX_SEED_LINE} bytes; the rest of the "
                                                  f"file is not read")
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield BadSeed(f"{path}:{number}", f"not UTF-8 text (byte {error.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError, ValueError) as error:
                yield BadSeed(f"{path}:{number}", f"not valid JSON ({getattr(error, 'msg', 'nested too deeply')})")
                continue
            yield row if isinstance(row, dict) else {"value": row}


def _json(path: Path, base_dir: Path) -> Iterator[SeedItem]:
    """A json seed is parsed whole, so it is capped (graph_files.MAX_FILE_BYTES); jsonl streams any size."""
    text = read_graph_text(path, base_dir, SEED_KEY, anywhere=True, what="seed file ")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"not valid JSON ({error.msg}, column {error.colno}); use jsonl for big files",
                          where=f"{path}:{error.lineno}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text (byte {error.start}); save the file as UTF-8",
                          where=f"{path}:{_line_of_byte(error)}") from None
    except (RecursionError, ValueError):
        raise ConfigError(f"{path}: nested too deeply (or a number too long) to read", key="seed.source.path") \
            from None
    if isinstance(data, dict):
        data = data.get("data") or data.get("rows") or [data]
    if not isinstance(data, list):
        raise ConfigError(f"holds a single {type(data).__name__}; a json seed file is a list of objects (or "
                          f"{{\"data\": [...]}})", where=f"{path}:1")
    for row in data:
        yield row if isinstance(row, dict) else {"value": row}


def _csv(path: Path, base_dir: Path) -> Iterator[SeedItem]:
    """Streamed line by line, each line capped: a 2 GB file without newlines is refused, not read whole."""
    with _open_seed(path, base_dir) as handle:
        number = 0

        def lines() -> Iterator[str]:
            nonlocal number
            for raw in capped_lines(handle, MAX_SEED_LINE):
                number += 1  # the line being decoded, for the error's file:line
                yield raw.decode("utf-8")

        reader = csv.DictReader(lines())
        try:
            yield from reader
        except UnicodeDecodeError as error:
            raise ConfigError(f"cannot read it as UTF-8 CSV ({error.reason}); save the file as UTF-8",
                              where=f"{path}:{number}") from None
        except csv.Error as error:
            raise ConfigError(f"cannot read it as CSV ({error})", where=f"{path}:{reader.line_num}") from None
        except LineTooLong as error:
            raise ConfigError(f"{error}; a csv row is at most {MAX_SEED_LINE} bytes",
                              where=f"{path}:{number + 1}") from None


def _line_of_byte(error: UnicodeDecodeError) -> int:
    data = error.object
    return bytes(data[:error.start]).count(b"\n") + 1


def _parquet(path: Path, base_dir: Path) -> Iterator[SeedItem]:
    import pyarrow.parquet as pq
    with _open_seed(path, base_dir):
        pass  # a regular file of the user's, not a device or pipe
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except Exception as error:  # pyarrow raises its own ArrowInvalid / OSError family
        raise ConfigError(f"{path} is not a parquet file ({error})", key="seed.source.path") from None
    for batch in batches:
        yield from batch.to_pylist()


HF_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}
"""The local files an `hf` seed reads with `datasets`, by suffix, and the builder that reads each."""
SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json")
"""A folder holding one of these was written by `save_to_disk`."""


def _hf(path: str, config: SeedConfig, base_dir: Path) -> Iterator[SeedItem]:
    """A local file or folder read with `datasets` (the same rules as any seed: never /proc, /dev or /sys;
    regular files of at most MAX_FILE_BYTES, as datasets may hold one whole), else a hub dataset id.
    Every error of datasets is one `ConfigError` naming `seed.source.path`."""
    local = base_dir / Path(path).expanduser()
    if local.exists() or local.is_symlink():
        rows = _hf_local(local, path, config, base_dir)
    elif not HUB_ID.fullmatch(path):
        raise ConfigError(f"{local} does not exist (and '{path}' is not a hub dataset id like owner/name)",
                          key=SEED_KEY)
    else:
        rows = _hf_hub(path, config)
    try:
        yield from rows
    except ConfigError:
        raise
    except Exception as error:  # datasets and pyarrow raise many types for a file they cannot read
        raise ConfigError(f"cannot read '{path}' with datasets ({type(error).__name__}: {error}); check the "
                          f"file, or use a jsonl, csv or parquet seed", key=SEED_KEY) from None


def _hf_local(local: Path, path: str, config: SeedConfig, base_dir: Path) -> Iterator[SeedItem]:
    import datasets
    resolved = checked_path(local, base_dir, SEED_KEY, anywhere=True, what="seed path ")
    if not resolved.is_dir():
        _check_hf_file(resolved, path, base_dir)
        files = [resolved]
    elif any((resolved / name).is_file() for name in SAVED_DATASET_FILES):
        for file in resolved.rglob("*"):
            if file.is_symlink() or not (file.is_file() or file.is_dir()):
                raise ConfigError(f"{file} in the saved dataset {path} is a link or not a regular file; give "
                                  f"a plain folder written by save_to_disk", key=SEED_KEY)
        loaded = datasets.load_from_disk(str(resolved))
        if isinstance(loaded, datasets.DatasetDict):
            if config.source.split not in loaded:
                raise ConfigError(f"the saved dataset {path} has no split '{config.source.split}' (it has "
                                  f"{', '.join(loaded)}); fix seed.source.split", key=SEED_KEY)
            loaded = loaded[config.source.split]
        yield from loaded
        return
    else:
        files = sorted(file for file in resolved.iterdir() if file.suffix.lstrip(".") in HF_BUILDERS)
        for file in files:
            _check_hf_file(checked_path(file, base_dir, SEED_KEY, anywhere=True, what="seed file "), path,
                           base_dir)
    builders = {HF_BUILDERS.get(file.suffix.lstrip("."), "") for file in files}
    if not files or len(builders) != 1 or "" in builders:
        raise ConfigError(f"{path} is not a data folder or file: an hf seed reads .jsonl, .json, .csv or "
                          f".parquet files of one kind, or a folder written by save_to_disk", key=SEED_KEY)
    yield from datasets.load_dataset(builders.pop(), data_files=[str(file) for file in files],
                                     split=config.source.split, streaming=True)


def _check_hf_file(file: Path, path: str, base_dir: Path) -> None:
    """A local file datasets will read: a regular file (opened without blocking) and not too big."""
    with open_graph_file(file, base_dir, SEED_KEY, anywhere=True, what="seed file ") as handle:
        size = os.fstat(handle.fileno()).st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"{file} is larger than {MAX_FILE_BYTES // 1_000_000} MB, the most an hf seed reads "
                          f"from a local file; use a jsonl, csv or parquet seed (read row by row)", key=SEED_KEY)


def _hf_hub(path: str, config: SeedConfig) -> Iterator[SeedItem]:
    import datasets
    problem = _hub_unreachable()
    if problem:
        raise ConfigError(f"'{path}' is no local folder or file, and the Hugging Face hub cannot be reached "
                          f"({problem}); download the dataset or fix the path", key=SEED_KEY)
    try:
        rows = datasets.load_dataset(path, config.source.name, split=config.source.split, streaming=True)
    except Exception as error:  # datasets raises many types (not found, gated, bad config name, network)
        raise ConfigError(f"cannot load '{path}' from the hub ({type(error).__name__}: {error})",
                          key=SEED_KEY) from None
    yield from rows


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be used right now, found in a few seconds instead of datasets' 30 s of retries."""
    if any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
           for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"{host}: {error.strerror or error}"
    return None


def _raw_rows(config: SeedConfig, base_dir: Path) -> Iterator[SeedItem]:
    source = config.source
    if source.type == "none":  # records made from nothing (a sampler node fills them)
        indexes = range(source.rows) if source.rows is not None else count()
        return ({"index": index} for index in indexes)
    assert source.path is not None
    if source.type == "hf":
        return _hf(source.path, config, base_dir)
    path = (base_dir / source.path) if not Path(source.path).is_absolute() else Path(source.path)
    with _open_seed(path, base_dir):
        pass  # refused now (missing, a folder, a device or pipe, under /proc), not at the first row
    readers = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}
    return readers[source.type](path, base_dir)


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
        rows = _shuffled(rows, config.shuffle_buffer, config.shuffle_seed)
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

"""Loading the outputs of several graphs as one dataset.

Every record's `metadata` holds the same provenance fields (id, graph, config_hash, llm_calls, retries,
tokens) plus the fields its graph adds (a score, a label, a source document). Arrow wants one struct type
per column, so files whose `metadata` differ do not load together as they are; nesting the graph's fields
under one key would not help (that key's struct would differ instead). `mixed_features` gives the union of
the files' features instead, and every record reads with the fields it lacks as None:

    files = ["runs/qs/sft.jsonl", "runs/syc/sft.jsonl"]
    data = datasets.load_dataset("json", data_files=files, features=synthloom.mixed_features(files))
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SAMPLE_LINES = 1000  # an output's records share one shape, so its first lines show every field


def mixed_features(files: Iterable[str | Path]) -> Any:
    """The `datasets.Features` that every given jsonl file's records fit: the union of their fields."""
    import datasets
    import pyarrow.json as pajson
    merged: Any = None
    for file in files:
        path = Path(file)
        try:
            with path.open("rb") as handle:
                sample = b"".join(islice(handle, SAMPLE_LINES))
        except OSError as error:
            raise ConfigError(f"cannot read {path} ({error.strerror or error})") from None
        if not sample.strip():
            continue
        try:
            schema = pajson.read_json(io.BytesIO(sample)).schema
        except (ValueError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path} is not JSON lines ({error})") from None
        features = datasets.Features.from_arrow_schema(schema)
        merged = features if merged is None else _union(merged, features)
    if merged is None:
        raise ConfigError("no records in the given files")
    return datasets.Features(merged)


def _union(left: Any, right: Any) -> Any:
    """One feature both fit: structs take every field, lists the union of their items, nulls give way."""
    import datasets
    if isinstance(left, dict) and isinstance(right, dict):
        return {key: _union(left[key], right[key]) if key in left and key in right else left.get(key, right.get(key))
                for key in dict.fromkeys([*left, *right])}
    if isinstance(left, datasets.List) and isinstance(right, datasets.List):
        return datasets.List(_union(left.feature, right.feature))
    if isinstance(left, datasets.Value) and isinstance(right, datasets.Value):
        if left.dtype == right.dtype or right.dtype == "null":
            return left
        if left.dtype == "null":
            return right
        numbers = {"int64", "float64", "bool"}
        return datasets.Value("float64" if {left.dtype, right.dtype} <= numbers else "string")
    if _is_null(left):
        return right
    if _is_null(right):
        return left
    raise ConfigError(f"the files hold the same field with different shapes ({left} and {right}); "
                      f"load them apart and select the columns they share")


def _is_null(feature: Any) -> bool:
    import datasets
    return isinstance(feature, datasets.Value) and feature.dtype == "null"

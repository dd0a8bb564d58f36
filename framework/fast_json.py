"""JSON on the hot path (request bodies, replies, output and journal lines) through orjson, several times
faster than the standard library: at zero server latency JSON is a good part of a node step's own CPU.

orjson refuses a few things `json` takes (an integer past 64 bits, a lone surrogate in a string); those
values go through `json` with ASCII escapes, so nothing a node returns is lost. Either way NaN and
infinity come out as null, which every JSON reader can load (`json` would write the bare word NaN,
which `datasets` cannot read).
"""
from __future__ import annotations

import json
import math
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    """UTF-8 JSON of `value`; what JSON has no form for (a set, a date, a Path) is written as its str()."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(_finite(value), default=str).encode()


def dumps_line(value: Any) -> bytes:
    """`dumps` plus the newline of a JSON-lines file."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return json.dumps(_finite(value), default=str).encode() + b"\n"


def loads(text: str | bytes) -> Any:
    """Parse JSON text; raises `json.JSONDecodeError` on bad input. orjson refuses an escaped lone surrogate
    (`"\\ud800"`) that `json` reads and writes, so those lines go through `json` and no record is lost."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _finite(value: Any) -> Any:
    """NaN and infinity as None, as orjson writes them, on the rare path that goes through `json`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value

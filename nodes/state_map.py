"""Key maps between a record and a nested graph (a subgraph, a LangGraph app), always written `{to: from}`:
`inputs: {their_key: our_key}`, `outputs: {our_key: their_key}`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synthloom.errors import RecordError

KeyMap = dict[str, str]


def pick(source: Mapping[str, Any], mapping: KeyMap, where: str) -> dict[str, Any]:
    """`{to: source[from]}`; a RecordError naming the first key `source` lacks."""
    for origin in mapping.values():
        if origin not in source:
            raise RecordError(f"{where}: there is no '{origin}' to copy (have: {', '.join(sorted(source))})")
    return {target: source[origin] for target, origin in mapping.items()}

"""Old spellings of graph keys, still read for one release.

One word per idea: `params:` is a model request's parameters everywhere, so the `python` node's function
arguments are `args:`; a key holding a list of message templates is never also the name of a state key, so
an output that takes its messages from the state says `messages_from:` (and `prompt_from:`, `chosen_from:`,
`rejected_from:`); and the seed's shuffle seed is `seed.shuffle_seed`, not `seed.seed`.

A graph file written the old way is rewritten to the new spelling before it is checked, so both spellings
mean (and hash to) the same graph, and each old key logs one warning line naming its file, line and new
spelling. Remove this module in the release after next.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .schema import MESSAGE_PARTS

if TYPE_CHECKING:
    from .loader import KeyPath, SourceMap

__all__ = ["modernize"]

log = logging.getLogger("synthloom.config.schema")


def modernize(raw: dict[str, Any], source_map: SourceMap) -> None:
    """Rewrite the old spellings in a parsed graph file in place, warning once for each."""
    seed = raw.get("seed")
    if isinstance(seed, dict):
        _rename(seed, ("seed",), "seed", "shuffle_seed", source_map)
    nodes = raw.get("nodes")
    for name, spec in (nodes.items() if isinstance(nodes, dict) else []):
        if isinstance(spec, dict) and spec.get("type") == "python":
            _rename(spec, ("nodes", name), "params", "args", source_map)
    outputs = raw.get("outputs")
    for index, output in enumerate(outputs if isinstance(outputs, list) else []):
        if not isinstance(output, dict):
            continue
        for part in MESSAGE_PARTS:
            if isinstance(output.get(part), str):
                _rename(output, ("outputs", index), part, f"{part}_from", source_map)


def _rename(mapping: dict[str, Any], path: KeyPath, old: str, new: str, source_map: SourceMap) -> None:
    if old not in mapping:
        return
    where = source_map.where((*path, old))
    dotted = ".".join(str(part) for part in (*path, old))
    if new in mapping:
        raise ConfigError(f"give '{new}' only ('{old}' is its old spelling)", where=where, key=dotted)
    log.warning("%s: %s: '%s' is now spelt '%s'; the old spelling is read until the next release", where,
                dotted, old, new)
    mapping[new] = mapping.pop(old)
    line = source_map.lines.get((*path, old))
    if line is not None:  # errors about the value still point at the line the user wrote
        source_map.lines[(*path, new)] = line

"""How short the shortest JSON value a schema accepts can be: so a server can refuse, before decoding, a
schema that no reply within `max_tokens` could satisfy (`minItems: 5000` makes a grammar that holds a decode
slot for minutes and still ends cut off)."""
from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


def least_characters(schema: Any, depth: int = 0) -> int:
    """A lower bound on the length of any JSON text the schema accepts (without spaces). Parts it does not
    understand (`$ref`, `not`, `if`) count as the one character of the shortest value, so it never
    overstates."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return 1
    inner = depth + 1
    if "const" in schema:
        return len(json.dumps(schema["const"], separators=(",", ":"), default=str))
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return min(len(json.dumps(value, separators=(",", ":"), default=str)) for value in schema["enum"])
    bounds: list[int] = []
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            bounds.append(min(least_characters(branch, inner) for branch in schema[key]))
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        bounds.append(max(least_characters(branch, inner) for branch in schema["allOf"]))
    kinds = schema.get("type")
    if isinstance(kinds, str):
        bounds.append(_least_of_type(kinds, schema, inner))
    elif isinstance(kinds, list) and kinds:
        bounds.append(min(_least_of_type(kind, schema, inner) for kind in kinds if isinstance(kind, str))
                      if all(isinstance(kind, str) for kind in kinds) else 1)
    elif "properties" in schema or "required" in schema:
        bounds.append(_least_of_type("object", schema, inner))
    elif "items" in schema or "minItems" in schema:
        bounds.append(_least_of_type("array", schema, inner))
    return max(bounds, default=1)


def _least_of_type(kind: str, schema: dict[str, Any], depth: int) -> int:
    if kind == "string":
        return 2 + _count(schema.get("minLength"))
    if kind in ("boolean", "null"):
        return 4
    if kind == "array":
        items = _count(schema.get("minItems"))
        prefix = _list(schema.get("prefixItems"))
        each = least_characters(schema.get("items"), depth)
        leading = sum(least_characters(item, depth) for item in prefix[:items])
        return 2 + leading + max(items - len(prefix), 0) * each + max(items - 1, 0)
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [name for name in _list(schema.get("required")) if isinstance(name, str)]
        members = [len(json.dumps(name)) + 1 + least_characters(properties.get(name), depth)
                   for name in dict.fromkeys(required)]
        extra = max(_count(schema.get("minProperties")) - len(members), 0)
        count = len(members) + extra
        return 2 + sum(members) + extra * 4 + max(count - 1, 0)  # 4: the shortest member, "":0
    return 1  # integer, number, or a type it does not know


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

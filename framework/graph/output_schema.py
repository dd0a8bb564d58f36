"""Structured output: a JSON Schema (inline, or from a pydantic model named `package.module:Model`),
the parse of a reply against it, and the message that shows the model its mistake on a retry."""
from __future__ import annotations

import json
from typing import Any

import jsonschema
from pydantic import BaseModel

from ..errors import RecordError
from .registry import import_object


class OutputSchema:
    def __init__(self, spec: dict[str, Any] | str):
        self.model: type[BaseModel] | None = None
        if isinstance(spec, str):
            found = import_object(spec)
            if not (isinstance(found, type) and issubclass(found, BaseModel)):
                raise ValueError(f"output_schema '{spec}' is not a pydantic model")
            self.model = found
            self.schema = found.model_json_schema()
        else:
            try:
                jsonschema.Draft202012Validator.check_schema(spec)
            except jsonschema.exceptions.SchemaError as error:
                path = ".".join(str(part) for part in error.absolute_path) or "the top"
                raise ValueError(f"output_schema is not a valid JSON Schema at {path}: {error.message}") from None
            self.schema = spec
        self._validator = jsonschema.Draft202012Validator(self.schema)

    @property
    def fields(self) -> set[str]:
        return set(self.schema.get("properties", {}))

    def parse(self, text: str) -> Any:
        """The reply as a validated object; `RecordError` saying what is wrong otherwise."""
        try:
            data = json.loads(_json_part(text), strict=False)
        except json.JSONDecodeError as error:
            raise RecordError(f"reply is not valid JSON ({error.msg} at char {error.pos})") from None
        if self.model is not None:
            try:
                return self.model.model_validate(data).model_dump(mode="json")
            except Exception as error:
                raise RecordError(f"reply does not fit the schema: {error}") from None
        problem = jsonschema.exceptions.best_match(self._validator.iter_errors(data))
        if problem is not None:
            path = ".".join(str(part) for part in problem.absolute_path) or "the reply"
            raise RecordError(f"reply does not fit the schema at {path}: {problem.message}")
        return data

    def retry_message(self, error: RecordError) -> dict[str, str]:
        return {"role": "user", "content": f"That reply was not usable: {error}. Answer again with only a "
                                           f"JSON object matching this schema: {json.dumps(self.schema)}"}


def _json_part(text: str) -> str:
    """Models wrap JSON in prose or ``` fences; take the outermost object or array."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    starts = [index for index in (stripped.find("{"), stripped.find("[")) if index >= 0]
    if not starts:
        return stripped
    start = min(starts)
    end = max(stripped.rfind("}"), stripped.rfind("]"))
    return stripped[start:end + 1] if end > start else stripped[start:]

"""How an OpenAI-compatible server is asked for JSON that fits a schema, and how `structured: auto` learns
which way a server takes.

Servers differ: OpenAI, vLLM and SGLang take `response_format: json_schema`; llama.cpp's servers take
`json_object` with a `schema`; vLLM 0.10 and newer also take `structured_outputs: {json: schema}`, older
vLLM a top-level `guided_json`; others take none, and then the schema goes into the prompt and the reply
is parsed and asked again (see `synthloom.engine.generate`). `auto` starts at the top of that ladder and steps
down, once per model, when a server refuses the field it was sent; the step is logged once and lands in
the manifest. A server may also ignore a field without a word (current vLLM ignores `guided_json` and the
schema of `json_object`): a fixed mode whose constrained reply does not fit the schema says so once,
naming the mode to try.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal

import jsonschema

StructuredMode = Literal["json_schema", "json_object", "structured_outputs", "guided_json", "prompt"]
LADDER: tuple[StructuredMode, ...] = ("json_schema", "json_object", "structured_outputs", "guided_json", "prompt")
FIELD: dict[str, str] = {"json_schema": "response_format", "json_object": "response_format",
                         "structured_outputs": "structured_outputs", "guided_json": "guided_json"}
"""The request field each mode adds; a refusal naming it moves `auto` down the ladder."""
TRY_INSTEAD: dict[str, str] = {
    "json_schema": "json_object (llama.cpp servers) or auto",
    "json_object": "json_schema (OpenAI, vLLM, SGLang) or auto",
    "structured_outputs": "guided_json (vLLM before 0.10) or json_schema",
    "guided_json": "structured_outputs (vLLM 0.10 and newer) or json_schema",
}
"""For a fixed mode whose field a server ignored: the modes to try."""

log = logging.getLogger("synthloom.models")


def schema_instruction(schema: dict[str, Any]) -> str:
    return f"Answer with only a JSON object matching this JSON Schema: {json.dumps(schema)}"


def apply_mode(mode: StructuredMode, body: dict[str, Any], schema: dict[str, Any], *,
               state_schema: bool = False) -> None:
    """Add the schema to a request body the way `mode` says; with `state_schema`, in the prompt too."""
    if state_schema and mode != "prompt":
        apply_mode("prompt", body, schema)
    if mode == "json_schema":
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": schema, "strict": True}}
    elif mode == "json_object":
        body["response_format"] = {"type": "json_object", "schema": schema}
    elif mode == "structured_outputs":
        body["structured_outputs"] = {"json": schema}
    elif mode == "guided_json":
        body["guided_json"] = schema
    elif "messages" in body:  # prompt: in the last user turn (a raw prompt is the user's own text, untouched)
        instruction = schema_instruction(schema)
        messages = body["messages"] = [dict(message) for message in body["messages"]]
        users = [message for message in messages if message.get("role") == "user"]
        if not users:
            messages.append({"role": "user", "content": instruction})
        elif json.dumps(schema) not in str(users[-1].get("content")):  # a parse retry already shows it
            users[-1]["content"] = f"{users[-1].get('content')}\n\n{instruction}"


def mode_of(body: dict[str, Any]) -> StructuredMode:
    """The mode a request body was built in (a body with no structured field counts as `prompt`)."""
    kind = (body.get("response_format") or {}).get("type")
    if kind in ("json_schema", "json_object"):
        return "json_schema" if kind == "json_schema" else "json_object"
    if "structured_outputs" in body:
        return "structured_outputs"
    return "guided_json" if "guided_json" in body else "prompt"


def fields_named(message: str, body: dict[str, Any]) -> frozenset[str]:
    """The request fields a server's error message names: a body key in a validation error's location
    (pydantic/FastAPI `('body', 'response_format', ...)`), a key in quotes or backticks, or a key with an
    underscore as a word. A bare common word ("model overloaded", "n/a") does not count."""
    named = {match for match in re.findall(r"""['"]body['"]\s*,\s*['"](\w+)['"]""", message) if match in body}
    for key in body:
        quoted = re.search(rf"""['"`]{re.escape(key)}['"`]""", message)
        if quoted or ("_" in key and re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", message)):
            named.add(key)
    return frozenset(named)


class StructuredLadder:
    """One model's structured-output mode for the run: fixed, or (`auto`) stepping down on refusals."""

    def __init__(self, model: str, setting: Literal["auto"] | StructuredMode):
        self.model = model
        self.auto = setting == "auto"
        self.mode: StructuredMode = "json_schema" if setting == "auto" else setting
        self.fell_back_from: list[StructuredMode] = []
        self.reason: str | None = None
        self.used = False
        self.ignored: str | None = None
        """Set once when a fixed mode's reply showed that the server ignored its field."""

    def refused(self, mode: StructuredMode, fields: frozenset[str], reason: str) -> bool:
        """A request sent in `mode` was refused naming `fields`. True if it should be sent again (in the
        current mode): `auto` steps down once per refused mode, however many requests in flight saw it."""
        if not self.auto or FIELD.get(mode) not in fields:
            return False
        if mode == self.mode:
            self.fell_back_from.append(mode)
            self.mode = LADDER[LADDER.index(mode) + 1]
            self.reason = reason
            log.warning("model '%s': the server refused %s structured output; using %s for the rest of the run "
                        "(set models.%s.structured to choose)", self.model, mode, self.mode, self.model)
        return True

    def reply_seen(self, text: str, finish_reason: str | None, schema: dict[str, Any]) -> None:
        """A fixed mode constrains the reply to the schema; a finished reply that does not fit it means the
        server ignored the mode's field (a reply cut by max_tokens says nothing about that). Said once."""
        if self.auto or self.mode == "prompt" or self.ignored is not None or finish_reason == "length":
            return
        try:
            fits = jsonschema.validators.validator_for(schema)(schema).is_valid(json.loads(text))
        except ValueError:  # not JSON at all
            fits = False
        if not fits:
            self.ignored = (f"a reply in structured: {self.mode} does not fit the schema asked for, so the server "
                            f"seems to ignore `{FIELD[self.mode]}`; try structured: {TRY_INSTEAD[self.mode]}")
            log.warning("model '%s': %s (models.%s.structured)", self.model, self.ignored, self.model)

    @property
    def states_schema(self) -> bool:
        """`auto`'s structured_outputs and guided_json steps also put the schema in the prompt: many servers
        silently ignore a field they do not know, and then nothing else would tell the model what to write."""
        return self.auto and self.mode in ("structured_outputs", "guided_json")

    def status(self) -> dict[str, Any] | None:
        """For the manifest: the mode in use, and what was given up and why (None if never used)."""
        if not self.used:
            return None
        status: dict[str, Any] = {"mode": self.mode}
        if self.fell_back_from:
            status.update(fell_back_from=list(self.fell_back_from), reason=self.reason)
        if self.ignored:
            status["ignored"] = self.ignored
        return status

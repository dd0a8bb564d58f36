"""Shape a finished record into training records: SFT (`messages`), DPO (TRL's conversational
`prompt`/`chosen`/`rejected`) or the raw state, each with metadata saying where it came from."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config.schema import MESSAGE_PARTS, OutputConfig
from ..errors import RecordError
from ..sandbox.expressions import Condition
from ..sandbox.templates import Template, render_messages

Messages = list[dict[str, Any]]


class OutputShaper:
    """One output of the graph, compiled once."""

    def __init__(self, config: OutputConfig):
        self.config = config
        self.name = config.name
        self.when = Condition(config.when) if config.when else None
        self._parts = {part: _compile(config, part) for part in MESSAGE_PARTS}
        self._metadata = {key: Condition(value) for key, value in config.metadata.items()}

    def shape(self, state: Mapping[str, Any], metadata: dict[str, Any]) -> list[dict[str, Any]]:
        if self.when is not None and not self.when.holds(state):
            return []
        meta = {**metadata, **{key: expression.evaluate(state) for key, expression in self._metadata.items()}}
        kind = self.config.format
        if kind == "raw":
            fields = self.config.fields
            kept = state if fields is None else {key: state[key] for key in fields if key in state}
            return [{**kept, "metadata": meta}]
        tools = self._tools(state)
        if kind == "sft":
            return [{"messages": self._messages("messages", state, None), **tools, "metadata": meta}]
        if self.config.pairs:
            return [{**_pair_record(pair, meta, self.config.pairs), **tools}
                    for pair in _listed(state, self.config.pairs)]
        return [{"prompt": self._messages("prompt", state, "user"),
                 "chosen": self._messages("chosen", state, "assistant"),
                 "rejected": self._messages("rejected", state, "assistant"), **tools, "metadata": meta}]

    def _tools(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """TRL's `tools` column (the JSON schemas of the tools the messages call), when the output asks for it."""
        key = self.config.tools_from
        if key is None:
            return {}
        tools = state.get(key)
        if not isinstance(tools, list) or not all(isinstance(tool, dict) and "function" in tool for tool in tools):
            raise RecordError(f"output '{self.name}': tools_from '{key}' should hold a list of tool schemas "
                              f"({{type: function, function: {{name, description, parameters}}}})")
        return {"tools": tools}

    def _messages(self, part: str, state: Mapping[str, Any], role: str | None) -> Messages:
        compiled = self._parts[part]
        where = f"output '{self.name}' ({part})"
        if isinstance(compiled, str):
            if compiled not in state:
                raise RecordError(f"output '{self.name}': the record has no '{compiled}'")
            return no_empty_answer(as_messages(state[compiled], role or "user", f"{self.name}.{part}"), where)
        assert compiled is not None
        return no_empty_answer(render_messages(compiled, state), where)


def _compile(config: OutputConfig, part: str) -> list[tuple[str, Template]] | str | None:
    """The compiled templates of a message part, or the state key it is taken from."""
    templates = config.templates(part)
    if templates is not None:
        return [(message.role, Template(message.content)) for message in templates]
    return config.source_key(part)


def _listed(state: Mapping[str, Any], key: str) -> list[Any]:
    value = state.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"'{key}' should be a list of pairs, not {type(value).__name__}")
    return value


MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
"""Kept from a message: TRL's conversational format, tool calls included."""


def as_messages(value: Any, role: str, where: str) -> Messages:
    """A string becomes one message of `role`; a list of {role, content} passes after a check."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict) and "role" in value:
        value = [value]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{key: m[key] for key in MESSAGE_KEYS if key in m} for m in value]
    raise RecordError(f"{where}: expected text or a list of {{role, content}} messages")


def no_empty_answer(messages: Messages, where: str) -> Messages:
    """An assistant turn with no text (a null or blank reply) teaches a model to say nothing: the record
    fails rather than reach the data. A turn that only calls tools has its text in `tool_calls`."""
    for number, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") == "assistant" and not message.get("tool_calls") and \
                not (isinstance(content, str) and content.strip()):
            raise RecordError(f"{where}: assistant message {number} is empty (the model gave no text); "
                              f"the record is not written")
    return messages


def _pair_record(pair: Any, meta: dict[str, Any], key: str) -> dict[str, Any]:
    if not isinstance(pair, dict) or not {"prompt", "chosen", "rejected"} <= pair.keys():
        raise RecordError(f"each item of '{key}' needs prompt, chosen and rejected")
    chosen = no_empty_answer(as_messages(pair["chosen"], "assistant", f"{key}.chosen"), f"'{key}' chosen")
    rejected = no_empty_answer(as_messages(pair["rejected"], "assistant", f"{key}.rejected"), f"'{key}' rejected")
    if chosen == rejected:
        raise RecordError(f"'{key}' has a pair whose chosen equals its rejected")
    extras = {k: v for k, v in pair.items() if k not in {"prompt", "chosen", "rejected"}}
    return {"prompt": as_messages(pair["prompt"], "user", f"{key}.prompt"), "chosen": chosen,
            "rejected": rejected, "metadata": {**meta, **extras}}

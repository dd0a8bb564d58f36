"""Jinja2 templates rendered in the sandbox: graph files may come from strangers.

Templates are compiled once per graph (not per record) and fail loudly on a missing variable.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import RecordError


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                        keep_trailing_newline=False)
    env.filters["tojson"] = _tojson
    return env


class Template:
    """A compiled template that knows which state keys it reads."""

    def __init__(self, source: str):
        self.source = source
        env = environment()
        try:
            self._template = env.from_string(source)
            self.variables = frozenset(meta.find_undeclared_variables(env.parse(source)))
        except jinja2.TemplateSyntaxError as error:
            raise ValueError(f"template syntax error on its line {error.lineno}: {error.message}") from None
        self._is_plain = not self.variables and "{" not in source

    def render(self, state: Mapping[str, Any]) -> str:
        if self._is_plain:
            return self.source
        try:
            return self._template.render(state)
        except jinja2.UndefinedError as error:
            raise RecordError(f"template needs {error.message}; no upstream node or seed column gives it") \
                from None
        except jinja2.exceptions.SecurityError as error:
            raise RecordError(f"template tried something the sandbox forbids: {error}") from None


def render_messages(templates: list[tuple[str, Template]], state: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": role, "content": template.render(state)} for role, template in templates]

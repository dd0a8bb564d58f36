"""Jinja2 templates rendered in the sandbox: graph files may come from strangers.

The sandbox stops escapes (`__class__` chains, `__globals__`); `BoundedEnvironment` also bounds what a
render may cost, because one template must not freeze the run: strings and numbers a template makes are
capped (`'a' * 10**9`, `2 ** (10**10)`, `x|center(10**9)`, `'{:>999999999}'.format(1)`), as are loop
iterations (`range` nested in `range`), calls (a macro calling itself twice per level) and the rendered
length. Jinja's constant folding at compile time is refused for the capped operators, so `validate` never
evaluates them. A bound that trips fails the record with a message saying which.

Templates are compiled once per graph (not per record) and fail loudly on a missing variable.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from .errors import RecordError

MAX_RENDERED = 1_000_000
"""Characters one render may produce."""
MAX_VALUE_LENGTH = 1_000_000
"""Length of a string or list a template makes (by *, +, %, str methods, filters)."""
MAX_INT_BITS = 14_000
"""Size of an integer a template makes (about 4,200 digits, what Python still prints)."""
MAX_LOOP_ITEMS = 1_000_000
"""Loop iterations (over ranges and data alike) in one render."""
MAX_CALLS = 100_000
"""Function, method and macro calls in one render."""
LOOP_GUARD = "_synthloom_loop_items"
CONCAT_GUARD = "_synthloom_concat"


class TemplateLimit(SecurityError):
    """A template went past one of the bounds above."""


@dataclass
class _Budget:
    loop_items: int = 0
    calls: int = 0


_budget: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _spend(loop_items: int = 0, calls: int = 0) -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.loop_items += loop_items
    budget.calls += calls
    if budget.loop_items > MAX_LOOP_ITEMS:
        raise TemplateLimit(f"more than {MAX_LOOP_ITEMS} loop iterations in one render")
    if budget.calls > MAX_CALLS:
        raise TemplateLimit(f"more than {MAX_CALLS} calls in one render (a macro calling itself?)")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_length(size: int, what: str) -> None:
    if size > MAX_VALUE_LENGTH:
        raise TemplateLimit(f"{what} would make a value of {size} items (the limit is {MAX_VALUE_LENGTH})")


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and abs(value) > MAX_VALUE_LENGTH:
        raise TemplateLimit(f"{what} was given {value}, more than {MAX_VALUE_LENGTH}")


_WIDTHS = re.compile(r"\d+")


def _check_format_string(text: str, what: str) -> None:
    """`'%0999999999d' % 1` and `'{:>999999999}'.format(1)` allocate the width they name."""
    for number in _WIDTHS.findall(text):
        if len(number) > 7 or int(number) > MAX_VALUE_LENGTH:
            raise TemplateLimit(f"{what} names a width of {number}, more than {MAX_VALUE_LENGTH}")


def bounded_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too big, before computing it."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if _length(sequence) and isinstance(times, int):
                _check_length(_length(sequence) * times, "'*'")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateLimit(f"'*' would make an integer of more than {MAX_INT_BITS} bits")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 \
                and max(left.bit_length(), 1) * right > MAX_INT_BITS:
            raise TemplateLimit(f"'**' would make an integer of more than {MAX_INT_BITS} bits")
    elif operator == "+":
        _check_length(_length(left) + _length(right), "'+'")
    elif operator == "%" and isinstance(left, str):
        _check_format_string(left, "'%' formatting")


_ALLOCATING_STR_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name in _ALLOCATING_STR_METHODS:
        for value in (*args, *kwargs.values()):
            _check_int(value, f"str.{name}")
    elif name in ("format", "format_map"):
        _check_format_string(text, f"str.{name}")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        growth = max(len(args[1]) - len(args[0]), 0)
        _check_length(len(text) + (text.count(args[0]) if args[0] else len(text) + 1) * growth, "str.replace")


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if n > 100 or max > 1000:
        raise TemplateLimit("lipsum is bounded to n <= 100 paragraphs of max <= 1000 words")
    return str(generate_lorem_ipsum(n, html, min, max))


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter whose integer arguments (widths, counts) and format strings are capped."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_int(value, f"the {name} filter")
        if name == "format" and len(args) > 0 and isinstance(args[0], str):
            _check_format_string(args[0], "the format filter")
        if name == "replace":
            strings = [value for value in args if isinstance(value, str)]
            if len(strings) >= 3:
                _check_str_method(strings[0], "replace", (strings[1], strings[2]), {})
        return function(*args, **kwargs)

    for attribute in ("jinja_pass_arg",):
        if hasattr(function, attribute):
            setattr(wrapped, attribute, getattr(function, attribute))
    wrapped.__name__ = getattr(function, "__name__", name)
    return wrapped


def _loop_items(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _spend(loop_items=1)
        yield item


def _bounded_concat(parts: list[Any]) -> str:
    """`a ~ b`: the joined length is checked before joining."""
    texts = [str(part) for part in parts]
    _check_length(sum(len(text) for text in texts), "'~'")
    return "".join(texts)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the operators, calls, loops and filters that can allocate or spin kept bounded."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["lipsum"] = _bounded_lipsum
        self.globals[LOOP_GUARD] = _loop_items
        self.globals[CONCAT_GUARD] = _bounded_concat
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        bounded_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _spend(calls=1)
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(target, "__name__", ""), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@lru_cache(maxsize=1)
def environment() -> BoundedEnvironment:
    env = BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters["tojson"] = _tojson
    return env


class _Guard(NodeTransformer):
    """Every `for` iterates through `_loop_items`, which counts against the render's budget; every `a ~ b`
    joins through `_bounded_concat`, which checks the length first."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - jinja's visitor naming
        self.generic_visit(node)
        node.iter = nodes.Call(nodes.Name(LOOP_GUARD, "load"), [node.iter], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return nodes.Call(nodes.Name(CONCAT_GUARD, "load"), [nodes.List(node.nodes)], [], None, None,
                          lineno=node.lineno)


def _guard_loops(tree: nodes.Template) -> nodes.Template:
    result = _Guard().visit(tree)
    assert isinstance(result, nodes.Template)
    return result


class Template:
    """A compiled template that knows which state keys it reads."""

    def __init__(self, source: str):
        self.source = source
        env = environment()
        try:
            tree = env.parse(source)
            self.variables = frozenset(meta.find_undeclared_variables(tree))
            self._attribute_reads = [(node.node.name, node.attr) for node in tree.find_all(nodes.Getattr)
                                     if isinstance(node.node, nodes.Name)]
            code = env.compile(_guard_loops(tree))
            # A plain dict, not Jinja's ChainMap: every render copies the globals, and a ChainMap copies slowly.
            self._template = env.template_class.from_code(env, code, dict(env.make_globals(None)), None)
        except jinja2.TemplateSyntaxError as error:
            raise ValueError(f"template syntax error on its line {error.lineno}: {error.message}") from None
        except (RecursionError, MemoryError):
            raise ValueError("template nested too deeply to compile") from None
        self._is_plain = not self.variables and "{" not in source
        self._names = tuple(self.variables)
        self._substitution = _substitution_parts(tree)

    def render(self, state: Mapping[str, Any]) -> str:
        if self._is_plain:
            return self.source
        token = _budget.set(_Budget())
        try:
            return self._render(state)
        except jinja2.UndefinedError as error:
            raise RecordError(self._undefined_message(error, state)) from None
        except TemplateLimit as error:
            raise RecordError(f"template went past a bound: {error}") from None
        except jinja2.exceptions.SecurityError as error:
            raise RecordError(f"template tried something the sandbox forbids: {error}") from None
        except (RecursionError, MemoryError):
            raise RecordError("template recursed too deeply or ran out of memory") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as error:
            raise RecordError(f"template failed: {type(error).__name__}: {error}") from None
        finally:
            _budget.reset(token)

    def _render(self, state: Mapping[str, Any]) -> str:
        if self._substitution is not None and all(name in state for name in self._names):
            # text and `{{ name }}` only: what Jinja would render, without a context and a generator per call
            text = "".join(str(state[part]) if is_name else part for is_name, part in self._substitution)
            if len(text) > MAX_RENDERED:
                raise TemplateLimit(f"rendered text longer than {MAX_RENDERED} characters")
            return text
        parts: list[str] = []
        size = 0
        # Only the variables the template names: Jinja copies what it is given into a new context, and a
        # record's state grows with every node.
        given = {name: state[name] for name in self._names if name in state}
        for part in self._template.generate(given):
            size += len(part)
            if size > MAX_RENDERED:
                raise TemplateLimit(f"rendered text longer than {MAX_RENDERED} characters")
            parts.append(part)
        return "".join(parts)


    def _undefined_message(self, error: jinja2.UndefinedError, state: Mapping[str, Any]) -> str:
        """Jinja says "'str object' has no attribute 'text'"; say which variable that is."""
        message = error.message or "a value it was not given"
        found = _NO_ATTRIBUTE.match(message)
        if found is None:
            return f"template needs {message}; no upstream node or seed column gives it"
        kind, attribute = found.group("type"), found.group("attribute")
        names = sorted({name for name, read in self._attribute_reads
                        if read == attribute and type(state.get(name)).__name__ == kind})
        subject = f"'{names[0]}'" if len(names) == 1 else f"a {kind} value"
        read = f"'{names[0]}.{attribute}'" if len(names) == 1 else f"'.{attribute}'"
        article = "an" if kind[:1] in "aeiou" else "a"
        return f"template reads {read}, but {subject} is {article} {kind} and has no attribute '{attribute}'"


def _substitution_parts(tree: nodes.Template) -> tuple[tuple[bool, str], ...] | None:
    """(is a variable, text or name) for a template that is only text and `{{ name }}` outputs (most
    prompts); None for anything else (filters, attributes, tags), which Jinja renders."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[tuple[bool, str]] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append((False, node.data))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            parts.append((True, node.name))
        else:
            return None
    return tuple(parts)


_NO_ATTRIBUTE = re.compile(r"^'(?P<type>[\w.]+) object' has no attribute '(?P<attribute>[^']*)'$")


def render_messages(templates: list[tuple[str, Template]], state: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": role, "content": template.render(state)} for role, template in templates]

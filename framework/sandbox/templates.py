"""Jinja2 templates rendered in the sandbox: graph files may come from strangers.

The sandbox stops escapes (`__class__` chains, `__globals__`); `BoundedEnvironment` also bounds what a
render may cost, because one template must not freeze the run. What a render *makes* is metered through
sandbox_budget: every operator, call and filter result is measured, the filters and methods that can grow
a value past their input (`indent`, `join`, `center`, `format`, `replace`, `wordwrap`, `sum`, `'a' * n`,
`2 ** n`...) are refused from their arguments before they run, and CPU time is read at every call and
every few loop steps. Loop iterations, calls (a macro calling itself twice per level) and the rendered
length are counted here. Jinja's constant folding at compile time is refused for the capped operators, so
`validate` never evaluates them. A bound that trips fails the record with a message saying which.

Templates are compiled once per graph (not per record) and fail loudly on a missing variable.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from ..errors import RecordError
from .budget import (
    SandboxLimit,
    charge,
    charge_result,
    check_bits,
    check_clock,
    check_format,
    check_join,
    check_size,
    check_str_method,
    check_sum,
    check_width,
    close_budget,
    current_budget,
    measure,
    open_budget,
    step,
)

MAX_RENDERED = 1_000_000
"""Characters one render may produce."""
MAX_LOOP_ITEMS = 1_000_000
"""Loop iterations (over ranges and data alike) in one render."""
MAX_CALLS = 100_000
"""Function, method, filter and macro calls in one render."""
LOOP_GUARD = "_synthloom_loop_items"
CONCAT_GUARD = "_synthloom_concat"


class TemplateLimit(SandboxLimit, SecurityError):
    """A template went past one of the bounds above or those of sandbox_budget."""


def _spend(loop_items: int = 0, calls: int = 0) -> None:
    counts = current_budget()
    if counts is None:
        return
    counts.loop_items += loop_items
    counts.calls += calls
    if counts.loop_items > MAX_LOOP_ITEMS:
        raise TemplateLimit(f"more than {MAX_LOOP_ITEMS} loop iterations in one render")
    if counts.calls > MAX_CALLS:
        raise TemplateLimit(f"more than {MAX_CALLS} calls in one render (a macro calling itself?)")


def bounded_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too big, before computing it."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if measure(sequence) and isinstance(times, int):
                check_size(measure(sequence) * times, "'*'")
        if isinstance(left, int) and isinstance(right, int):
            check_bits(left.bit_length() + right.bit_length(), "'*'")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            check_bits(max(left.bit_length(), 1) * right, "'**'")
    elif operator == "+":
        check_size(measure(left) + measure(right), "'+'")
    elif operator == "%" and isinstance(left, str):
        check_format(left, [right], "'%' formatting")


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if n > 100 or max > 1000:
        raise TemplateLimit("lipsum is bounded to n <= 100 paragraphs of max <= 1000 words")
    return str(generate_lorem_ipsum(n, html, min, max))


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


_GROWING_FILTERS = frozenset({"indent", "join", "format", "replace", "wordwrap", "sum"})


def _check_filter(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The filters whose result can be much bigger than their input, refused from their arguments."""
    for argument in (*args, *kwargs.values()):
        check_width(argument, f"the {name} filter")
    if name not in _GROWING_FILTERS:
        return
    if name == "indent":
        text = str(value)
        width = _argument(args, kwargs, 0, "width", 4)
        per_line = width if isinstance(width, int) else len(str(width))
        check_size(len(text) + (text.count("\n") + 1) * max(per_line, 0), "the indent filter")
    elif name == "join":
        check_join(value, str(_argument(args, kwargs, 0, "d", "")), "the join filter")
    elif name == "format" and isinstance(value, str):
        check_format(value, (*args, *kwargs.values()), "the format filter")
    elif name == "replace" and len(args) >= 2:
        check_str_method(str(value), "replace", args[:2], {})
    elif name == "wordwrap":
        text = str(value)
        width = _argument(args, kwargs, 0, "width", 79)
        wrap = _argument(args, kwargs, 2, "wrapstring", None) or "\n"
        lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
        check_size(len(text) + lines * len(str(wrap)), "the wordwrap filter")
    elif name == "sum":
        check_sum(value, _argument(args, kwargs, 1, "start", 0), "the sum filter")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter under the render's budget: checked from its arguments before it runs, its result
    measured after (an iterator as it is consumed), the clock read at every call."""
    passes_context = getattr(function, "jinja_pass_arg", None) is not None

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _spend(calls=1)
        check_clock()
        leading, rest = (args[:1], args[1:]) if passes_context else ((), args)
        if rest:
            value = rest[0]
            if name in ("join", "sum") and isinstance(value, Iterator):
                value = list(value)  # counted item by item if another filter made it
            _check_filter(name, value, tuple(rest[1:]), kwargs)
            args = (*leading, value, *rest[1:])
        return charge_result(function(*args, **kwargs), f"the {name} filter")

    for attribute in ("jinja_pass_arg",):
        if hasattr(function, attribute):
            setattr(wrapped, attribute, getattr(function, attribute))
    wrapped.__name__ = getattr(function, "__name__", name)
    return wrapped


def _loop_items(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = current_budget()
    for item in iterable:
        if budget is not None:
            budget.loop_items += 1
            if budget.loop_items > MAX_LOOP_ITEMS:
                raise TemplateLimit(f"more than {MAX_LOOP_ITEMS} loop iterations in one render")
        step()
        yield item


def _bounded_concat(parts: list[Any]) -> str:
    """`a ~ b`: the joined length is checked before joining."""
    texts = [str(part) for part in parts]
    charge(sum(len(text) for text in texts), "'~'")
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
        return charge_result(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if __obj is _loop_items or __obj is _bounded_concat:
            return __context.call(__obj, *args, **kwargs)
        _spend(calls=1)
        check_clock()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str):
            check_str_method(owner, name, args, kwargs)
        elif name == "sum" and args:
            check_sum(args[0], args[1] if len(args) > 1 else kwargs.get("start", 0), "sum()")
        return charge_result(super().call(__context, __obj, *args, **kwargs), f"{name or 'a call'}()")


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
        budget = open_budget()
        try:
            return self._render(state)
        except jinja2.UndefinedError as error:
            raise RecordError(self._undefined_message(error, state)) from None
        except SandboxLimit as error:
            raise RecordError(f"template went past a bound: {error}") from None
        except jinja2.exceptions.SecurityError as error:
            raise RecordError(f"template tried something the sandbox forbids: {error}") from None
        except (RecursionError, MemoryError):
            raise RecordError("template recursed too deeply or ran out of memory") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, AssertionError) as error:
            # filters given what they did not expect: `{{ 3|wordwrap(1) }}` calls int.splitlines (AttributeError),
            # `{{ 'abc'|truncate(2) }}` asserts its length
            raise RecordError(f"template failed: {type(error).__name__}: {error}") from None
        finally:
            close_budget(budget)

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

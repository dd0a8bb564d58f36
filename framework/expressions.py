"""Safe conditions (`when: "review.score < 7"`) over a record's state; never Python's eval.

simpleeval walks the AST with a whitelist: comparisons, and/or/not, arithmetic, literals, dict access by
attribute (`review.score`) or subscript, and the few functions below. `BoundedEval` also bounds what one
evaluation may cost (graph files may come from strangers): `4000000**4000000`, `text.center(3*10**9)`,
`'%0999999999d' % 1` are refused before they allocate; simpleeval itself caps comprehensions at
10,000 items per evaluation.
"""
from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from .errors import RecordError

MAX_EXPRESSION_LENGTH = 10_000
"""Characters of one expression's source."""
MAX_VALUE_LENGTH = 1_000_000
"""Length of a string or list an expression makes."""
MAX_TOTAL_LENGTH = 10_000_000
"""Length of all strings and lists one evaluation makes (a comprehension of 10,000 big strings)."""
MAX_INT_BITS = 14_000
"""Size of an integer an expression makes (about 4,200 digits, what Python still prints)."""


class ExpressionLimit(InvalidExpression):  # type: ignore[misc]
    """An expression went past one of the bounds above."""


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


_made: ContextVar[list[int] | None] = ContextVar("expression_made", default=None)


def _check_length(size: int, what: str) -> None:
    if size > MAX_VALUE_LENGTH:
        raise ExpressionLimit(f"{what} would make a value of {size} items (the limit is {MAX_VALUE_LENGTH})")
    made = _made.get()
    if made is not None:
        made[0] += size
        if made[0] > MAX_TOTAL_LENGTH:
            raise ExpressionLimit(f"the expression made more than {MAX_TOTAL_LENGTH} characters or items in all")


def _check_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise ExpressionLimit(f"{what} would make an integer of more than {MAX_INT_BITS} bits")


def _power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0:
        _check_bits(max(left.bit_length(), 1) * right, "'**'")
    return left ** right


def _multiply(left: Any, right: Any) -> Any:
    for sequence, times in ((left, right), (right, left)):
        if _length(sequence) and isinstance(times, int):
            _check_length(_length(sequence) * times, "'*'")
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length(), "'*'")
    return left * right


def _add(left: Any, right: Any) -> Any:
    _check_length(_length(left) + _length(right), "'+'")
    return left + right


_WIDTHS = re.compile(r"\d+")


def _check_format_string(text: str, what: str) -> None:
    for number in _WIDTHS.findall(text):
        if len(number) > 7 or int(number) > MAX_VALUE_LENGTH:
            raise ExpressionLimit(f"{what} names a width of {number}, more than {MAX_VALUE_LENGTH}")


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_format_string(left, "'%' formatting")
    return left % right


def _shift(function: Any) -> Any:
    def shifted(left: Any, right: Any) -> Any:
        if isinstance(left, int) and isinstance(right, int) and function is operator.lshift:
            _check_bits(left.bit_length() + max(right, 0), "'<<'")
        return function(left, right)
    return shifted


def _round(number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > 1000:
        raise ExpressionLimit("round() takes at most 1000 digits")
    return round(number, ndigits)


SAFE_FUNCTIONS = {"len": len, "min": min, "max": max, "abs": abs, "round": _round, "str": str, "int": int,
                  "float": float, "bool": bool, "any": any, "all": all, "sum": sum}

_ALLOCATING_STR_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}


def _check_method(owner: Any, name: str, args: list[Any]) -> None:
    """str methods whose arguments say how much to allocate."""
    if not isinstance(owner, (str, bytes)):
        return
    if name in _ALLOCATING_STR_METHODS:
        for value in args:
            if isinstance(value, int) and abs(value) > MAX_VALUE_LENGTH:
                raise ExpressionLimit(f"str.{name} was given {value}, more than {MAX_VALUE_LENGTH}")
    elif name in ("format", "format_map") and isinstance(owner, str):
        _check_format_string(owner, f"str.{name}")
    elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
        old, new = args[0], args[1]
        if isinstance(old, str) and isinstance(new, str):
            occurrences = owner.count(old) if old else len(owner) + 1
            _check_length(len(owner) + occurrences * max(len(new) - len(old), 0), "str.replace")


class BoundedEval(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval with the allocating operators, functions and str methods bounded."""

    def __init__(self, names: Mapping[str, Any]):
        super().__init__(names=dict(names), functions=SAFE_FUNCTIONS)
        self.operators.update({ast.Pow: _power, ast.Mult: _multiply, ast.Add: _add, ast.Mod: _modulo,
                               ast.LShift: _shift(operator.lshift), ast.RShift: _shift(operator.rshift)})
        self.nodes[ast.Call] = self._eval_bounded_call
        self.nodes[ast.FormattedValue] = self._eval_bounded_formattedvalue

    def _eval_bounded_call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Attribute):
            return self._eval_call(node)  # one of SAFE_FUNCTIONS
        method = self._eval(node.func)  # simpleeval refuses _private and unsafe attributes here
        args = [self._eval(arg) for arg in node.args]
        kwargs = dict(self._eval(keyword) for keyword in node.keywords)
        _check_method(getattr(method, "__self__", None), getattr(method, "__name__", ""), [*args, *kwargs.values()])
        return method(*args, **kwargs)

    def _eval_bounded_formattedvalue(self, node: ast.FormattedValue) -> Any:
        if node.format_spec is not None:
            _check_format_string(str(self._eval(node.format_spec)), "an f-string")
        return self._eval_formattedvalue(node)


class Condition:
    """A parsed expression; `names` are the state keys it reads (checked by graph validation)."""

    def __init__(self, source: str):
        self.source = source
        if not isinstance(source, str) or len(source) > MAX_EXPRESSION_LENGTH:
            raise ValueError(f"an expression is a string of at most {MAX_EXPRESSION_LENGTH} characters")
        try:
            module = ast.parse(source.strip())
            if len(module.body) != 1 or not isinstance(module.body[0], ast.Expr):
                raise SyntaxError("one expression expected")
            self._tree = module.body[0]
            bound = {target.id for comprehension in ast.walk(self._tree)
                     if isinstance(comprehension, ast.comprehension)
                     for target in ast.walk(comprehension.target) if isinstance(target, ast.Name)}
            self.names = frozenset(node.id for node in ast.walk(self._tree) if isinstance(node, ast.Name)) \
                - SAFE_FUNCTIONS.keys() - {"True", "False", "None"} - bound
        except SyntaxError as error:
            raise ValueError(f"cannot parse expression '{source}': {error.msg}") from None
        except (RecursionError, MemoryError, ValueError):
            raise ValueError(f"expression nested too deeply or not parsable ({len(source)} characters)") \
                from None

    def evaluate(self, state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Any:
        names = dict(state)
        if extra:
            names.update(extra)
        evaluator = BoundedEval(names)
        token = _made.set([0])
        try:
            return evaluator.eval(self.source.strip(), previously_parsed=self._tree)
        except (InvalidExpression, TypeError, ValueError, KeyError, IndexError, ArithmeticError,
                AttributeError) as error:
            raise RecordError(f"condition '{self.source}' failed: {error}") from None
        except (RecursionError, MemoryError):
            raise RecordError(f"condition '{self.source}' recursed too deeply or ran out of memory") from None
        finally:
            _made.reset(token)

    def holds(self, state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> bool:
        return bool(self.evaluate(state, extra))

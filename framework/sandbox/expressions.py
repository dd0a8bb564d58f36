"""Safe conditions (`when: "review.score < 7"`) over a record's state; never Python's eval.

simpleeval walks the AST with a whitelist: comparisons, and/or/not, arithmetic, literals, dict access by
attribute (`review.score`) or subscript, and the few functions below. `BoundedEval` also bounds what one
evaluation may cost (graph files may come from strangers) through sandbox_budget: `4000000**4000000`,
`text.center(3*10**9)`, `'%0999999999d' % 1`, `'x'.join(big_list)` are refused before they allocate, what
every call and comprehension makes is measured against a per-evaluation total, and CPU time is read as it
goes; simpleeval itself caps comprehensions at 10,000 items per evaluation.
"""
from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from ..errors import RecordError
from .budget import (
    MAX_MADE,
    SandboxLimit,
    charge_result,
    check_bits,
    check_clock,
    check_format,
    check_size,
    check_str_method,
    check_sum,
    close_budget,
    measure,
    open_budget,
    step,
)

MAX_EXPRESSION_LENGTH = 10_000
"""Characters of one expression's source."""
MAX_TOTAL_LENGTH = MAX_MADE
"""Characters and items one evaluation makes in all (see sandbox_budget)."""


class ExpressionLimit(SandboxLimit, InvalidExpression):  # type: ignore[misc]
    """An expression went past one of the bounds of sandbox_budget."""


def _power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0:
        check_bits(max(left.bit_length(), 1) * right, "'**'")
    return left ** right


def _multiply(left: Any, right: Any) -> Any:
    for sequence, times in ((left, right), (right, left)):
        if measure(sequence) and isinstance(times, int):
            check_size(measure(sequence) * times, "'*'")
    if isinstance(left, int) and isinstance(right, int):
        check_bits(left.bit_length() + right.bit_length(), "'*'")
    return charge_result(left * right, "'*'")


def _add(left: Any, right: Any) -> Any:
    check_size(measure(left) + measure(right), "'+'")
    return charge_result(left + right, "'+'")


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        check_format(left, [right], "'%' formatting")
    return charge_result(left % right, "'%'")


def _shift(function: Any) -> Any:
    def shifted(left: Any, right: Any) -> Any:
        if isinstance(left, int) and isinstance(right, int) and function is operator.lshift:
            check_bits(left.bit_length() + max(right, 0), "'<<'")
        return function(left, right)
    return shifted


def _round(number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > 1000:
        raise ExpressionLimit("round() takes at most 1000 digits")
    return round(number, ndigits)


_SCALARS = frozenset({int, float, str, bool, type(None), bytes})
SAFE_FUNCTIONS = {"len": len, "min": min, "max": max, "abs": abs, "round": _round, "str": str, "int": int,
                  "float": float, "bool": bool, "any": any, "all": all, "sum": sum}


class BoundedEval(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval under the evaluation's budget: every node is a step (the clock is read every 64), every
    call is checked from its arguments before it runs and its result measured after."""

    def __init__(self, names: Mapping[str, Any]):
        super().__init__(names=dict(names), functions=SAFE_FUNCTIONS)
        self.operators.update({ast.Pow: _power, ast.Mult: _multiply, ast.Add: _add, ast.Mod: _modulo,
                               ast.LShift: _shift(operator.lshift), ast.RShift: _shift(operator.rshift)})
        self.nodes[ast.Call] = self._eval_bounded_call
        self.nodes[ast.FormattedValue] = self._eval_bounded_formattedvalue
        for kind in (ast.ListComp, ast.GeneratorExp, ast.DictComp):
            self.nodes[kind] = self._eval_bounded_comprehension
        self._checked: dict[int, Any] = {}
        self._steps = 0

    def _check_disallowed_items(self, item: Any) -> None:
        """simpleeval walks every container a node returns, again at every node: `[[1]*10**6]*100` cost
        100 million steps. Each container is walked once per evaluation here (kept, so its id stays its own).
        simpleeval calls this once per node evaluated, so it is also where the steps are counted and the clock
        read every 64 of them."""
        self._steps += 1
        if self._steps % 64 == 0:
            check_clock()
        if type(item) in _SCALARS:
            return
        if isinstance(item, (list, tuple, set, frozenset, dict)):
            if id(item) in self._checked:
                return
            self._checked[id(item)] = item
            step()
            for element in item.values() if isinstance(item, dict) else item:
                if type(element) not in _SCALARS:
                    self._check_disallowed_items(element)
            return
        super()._check_disallowed_items(item)

    def _eval_bounded_call(self, node: ast.Call) -> Any:
        check_clock()
        if not isinstance(node.func, ast.Attribute):
            name = getattr(node.func, "id", "")
            if name == "sum" and node.args:
                args = [self._eval(arg) for arg in node.args]
                check_sum(args[0], args[1] if len(args) > 1 else 0, "sum()")
                return charge_result(sum(*args), "sum()")
            return charge_result(self._eval_call(node), f"{name}()")  # one of SAFE_FUNCTIONS
        method = self._eval(node.func)  # simpleeval refuses _private and unsafe attributes here
        args = [self._eval(arg) for arg in node.args]
        kwargs = dict(self._eval(keyword) for keyword in node.keywords)
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
        if isinstance(owner, str):
            check_str_method(owner, name, args, kwargs)
        return charge_result(method(*args, **kwargs), f"{type(owner).__name__}.{name}")

    def _eval_bounded_comprehension(self, node: ast.AST) -> Any:
        return charge_result(self._eval_comprehension(node), "a comprehension")

    def _eval_bounded_formattedvalue(self, node: ast.FormattedValue) -> Any:
        if node.format_spec is not None:
            check_format(str(self._eval(node.format_spec)), [], "an f-string")
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
        budget = open_budget()
        try:
            return evaluator.eval(self.source.strip(), previously_parsed=self._tree)
        except SandboxLimit as error:
            raise RecordError(f"condition '{self.source}' went past a bound: {error}") from None
        except (InvalidExpression, TypeError, ValueError, KeyError, IndexError, ArithmeticError,
                AttributeError) as error:
            raise RecordError(f"condition '{self.source}' failed: {error}") from None
        except (RecursionError, MemoryError):
            raise RecordError(f"condition '{self.source}' recursed too deeply or ran out of memory") from None
        finally:
            close_budget(budget)

    def holds(self, state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> bool:
        return bool(self.evaluate(state, extra))

"""Safe conditions (`when: "review.score < 7"`) over a record's state; never Python's eval.

simpleeval walks the AST with a whitelist: comparisons, and/or/not, arithmetic, literals, dict access by
attribute (`review.score`) or subscript, and the few functions below.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from .errors import RecordError

SAFE_FUNCTIONS = {"len": len, "min": min, "max": max, "abs": abs, "round": round, "str": str, "int": int,
                  "float": float, "bool": bool, "any": any, "all": all, "sum": sum}


class Condition:
    """A parsed expression; `names` are the state keys it reads (checked by graph validation)."""

    def __init__(self, source: str):
        self.source = source
        try:
            module = ast.parse(source.strip())
            if len(module.body) != 1 or not isinstance(module.body[0], ast.Expr):
                raise SyntaxError("one expression expected")
            self._tree = module.body[0]
        except SyntaxError as error:
            raise ValueError(f"cannot parse expression '{source}': {error.msg}") from None
        bound = {target.id for comprehension in ast.walk(self._tree) if isinstance(comprehension, ast.comprehension)
                 for target in ast.walk(comprehension.target) if isinstance(target, ast.Name)}
        self.names = frozenset(node.id for node in ast.walk(self._tree) if isinstance(node, ast.Name)) \
            - SAFE_FUNCTIONS.keys() - {"True", "False", "None"} - bound

    def evaluate(self, state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Any:
        names = dict(state)
        if extra:
            names.update(extra)
        evaluator = EvalWithCompoundTypes(names=names, functions=SAFE_FUNCTIONS)
        try:
            return evaluator.eval(self.source.strip(), previously_parsed=self._tree)
        except (InvalidExpression, TypeError, ValueError, KeyError, ZeroDivisionError) as error:
            raise RecordError(f"condition '{self.source}' failed: {error}") from None

    def holds(self, state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> bool:
        return bool(self.evaluate(state, extra))

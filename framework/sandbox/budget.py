"""What one template render or one condition evaluation may spend: a stranger's graph costs a record, not the
machine.

Both sandboxes (templates.py, expressions.py) open a `Budget` per render / evaluation and charge it from their
hooks: every value a call, filter or operator produces is measured (`charge`), and the calls that can make a
value much bigger than their inputs (`indent`, `join`, `format`, `replace`, `expandtabs`, `translate`, `sum`,
`wordwrap`...) are checked *before* they run, from their arguments (`check_str_method`, `check_join`...).
CPU time is read at every call and every few loop or comprehension steps, so no render holds the event loop
for more than about `MAX_SECONDS` plus one bounded step. A bound that trips raises `SandboxLimit`, which the
caller turns into a failed record naming the bound.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

MAX_VALUE_LENGTH = 1_000_000
"""Characters or items of one string, list or dict a template or expression makes."""
MAX_MADE = 10_000_000
"""Characters and items made in all by one render or one evaluation (a loop of sorts, a comprehension of copies)."""
MAX_SECONDS = 0.5
"""CPU seconds one render or one evaluation may run (so it holds the event loop about that long at most). The
thread's CPU clock is a system call, so it is read only once the wall clock says the budget could be spent."""
MAX_INT_BITS = 14_000
"""Size of an integer a template or expression makes (about 4,200 digits, what Python still prints)."""
_CLOCK_EVERY = 64
"""Loop and comprehension steps between two looks at the clock (calls look every time)."""


class SandboxLimit(Exception):
    """A render or evaluation went past one of the bounds above."""


class Budget:
    """What one render or evaluation has spent so far."""

    __slots__ = ("made", "steps", "loop_items", "calls", "started", "cpu_started")

    def __init__(self) -> None:
        self.made = 0
        self.steps = 0
        self.loop_items = 0
        self.calls = 0
        """Counted by templates.py against its own bounds."""
        self.started: float | None = None
        """Set at the first look at the clock: a render that calls nothing (most prompts) never reads it."""
        self.cpu_started = 0.0

    def past_deadline(self) -> bool:
        now = time.monotonic()
        if self.started is None:
            self.started, self.cpu_started = now, time.thread_time()
            return False
        if now - self.started <= MAX_SECONDS:
            return False  # no more CPU time than wall time has passed
        return time.thread_time() - self.cpu_started > MAX_SECONDS


_current: ContextVar[Budget | None] = ContextVar("sandbox_budget", default=None)


def open_budget() -> Any:
    """Start a budget for one render or evaluation; give the token to `close_budget`."""
    return _current.set(Budget())


def close_budget(token: Any) -> None:
    _current.reset(token)


def current_budget() -> Budget | None:
    return _current.get()


def check_clock() -> None:
    budget = _current.get()
    if budget is not None and budget.past_deadline():
        raise SandboxLimit(f"ran more than {MAX_SECONDS} CPU seconds")


def step() -> None:
    """One loop or comprehension step; looks at the clock every `_CLOCK_EVERY` steps."""
    budget = _current.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps % _CLOCK_EVERY == 1 and budget.past_deadline():
        raise SandboxLimit(f"ran more than {MAX_SECONDS} CPU seconds")


def check_size(size: int, what: str) -> None:
    """Refuse a value of `size` characters or items before it is made."""
    if size > MAX_VALUE_LENGTH:
        raise SandboxLimit(f"{what} would make a value of {size} items (the limit is {MAX_VALUE_LENGTH})")


def measure(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def charge(size: int, what: str) -> None:
    """`size` characters or items were (or are about to be) made: count them against the one-value and the
    per-render bounds."""
    check_size(size, what)
    budget = _current.get()
    if budget is None:
        return
    budget.made += size
    if budget.made > MAX_MADE:
        raise SandboxLimit(f"made more than {MAX_MADE} characters or items in all (at {what})")


_SIZED = frozenset({str, bytes, list, tuple, dict, set, frozenset})
_UNSIZED = frozenset({int, float, bool, type(None)})


def charge_result(value: Any, what: str) -> Any:
    """Measure what a call produced; an iterator is measured item by item as it is consumed."""
    kind = type(value)
    if kind in _SIZED:
        charge(len(value), what)
    elif kind not in _UNSIZED and isinstance(value, Iterator):
        return _metered(value, what)
    elif isinstance(value, (str, list, tuple, dict)):  # Markup and other subclasses
        charge(len(value), what)
    return value


def _metered(items: Iterator[Any], what: str) -> Iterator[Any]:
    for item in items:
        step()
        charge(measure(item) + 1, what)
        yield item


def check_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise SandboxLimit(f"{what} would make an integer of more than {MAX_INT_BITS} bits")


def check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_LENGTH:
        raise SandboxLimit(f"{what} was given {value}, more than {MAX_VALUE_LENGTH}")


_NUMBERS = re.compile(r"\d+")


def check_format(template: str, arguments: Iterable[Any], what: str) -> None:
    """`'%0999999999d' % 1` allocates the width it names, and `'%(a)s%(a)s...' % big` (or `'{0}{0}...'.format`)
    copies an argument once per placeholder: refuse both from the format string and the arguments' sizes."""
    for number in _NUMBERS.findall(template):
        if len(number) > 7 or int(number) > MAX_VALUE_LENGTH:
            raise SandboxLimit(f"{what} names a width of {number}, more than {MAX_VALUE_LENGTH}")
    placeholders = template.count("%") + template.count("{")
    if placeholders:
        biggest = max((_text_size(argument) for argument in _flatten(arguments)), default=0)
        check_size(len(template) + placeholders * biggest, what)


def _flatten(arguments: Iterable[Any]) -> Iterator[Any]:
    for argument in arguments:
        if isinstance(argument, Mapping):
            yield from argument.values()
        elif isinstance(argument, (tuple, list)):
            yield from argument
        yield argument


def _text_size(value: Any) -> int:
    """About how many characters `str(value)` has, without making it for a string."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return 8 * (len(value) + 1)  # a rough floor; the result is charged once made
    return 32


_GROWING_STR_METHODS = {"center", "ljust", "rjust", "zfill"}


def check_str_method(text: str, name: str, args: tuple[Any, ...] | list[Any], kwargs: Mapping[str, Any]) -> None:
    """A `str` method whose result can be much bigger than the string: refuse it from its arguments."""
    values = [*args, *kwargs.values()]
    if name in _GROWING_STR_METHODS:
        for value in values:
            check_width(value, f"str.{name}")
    elif name == "expandtabs":
        size = values[0] if values and isinstance(values[0], int) else 8
        check_width(size, "str.expandtabs")
        check_size(len(text) + text.count("\t") * max(size, 0), "str.expandtabs")
    elif name in ("format", "format_map"):
        check_format(text, values, f"str.{name}")
    elif name == "replace" and len(values) >= 2 and isinstance(values[0], str) and isinstance(values[1], str):
        old, new = values[0], values[1]
        occurrences = text.count(old) if old else len(text) + 1
        check_size(len(text) + occurrences * max(len(new) - len(old), 0), "str.replace")
    elif name == "join" and values:
        check_join(values[0], text, "str.join")
    elif name == "translate" and values and isinstance(values[0], Mapping):
        longest = max((len(value) for value in values[0].values() if isinstance(value, str)), default=1)
        check_size(len(text) * max(longest, 1), "str.translate")
    elif name in ("split", "rsplit") and values and isinstance(values[0], str) and values[0]:
        check_size(text.count(values[0]) + 1, f"str.{name}")


def check_join(items: Any, separator: str, what: str) -> None:
    """`sep.join(items)` is as long as the items and the separators together: refuse it before joining."""
    if not isinstance(items, (list, tuple)):
        return  # a str joins its own characters (at most doubles); an iterator is metered as consumed
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        size += _text_size(item)
        if size > MAX_VALUE_LENGTH:
            break
    check_size(size, what)


def check_sum(items: Any, start: Any, what: str) -> None:
    """`sum(lists, [])` copies the growing total at every step: refuse when the total would be too long."""
    if not isinstance(start, (list, tuple)):
        return  # numbers: each step makes one number
    if isinstance(items, (list, tuple)):
        size = measure(start)
        for item in items:
            size += measure(item)
        check_size(size, what)

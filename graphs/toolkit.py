"""The tools the function_calling workflow calls for real: a calculator, unit conversion and a lookup table
of countries. Plain typed functions, so they serve both as Python tools (`tools: {kit: {python: [...]}}`) and
behind the MCP server `python -m synthloom_graphs.tool_server`."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from simpleeval import SimpleEval

__graph_api__ = ["calculate", "convert_units", "lookup_country"]

TABLE_ENV = "SYNTHLOOM_LOOKUP_TABLE"
"""A JSON file of {name: {field: value}} to use instead of the shipped table (the server's --table)."""
DEFAULT_TABLE = Path(__file__).parent / "data" / "lookup_table.json"

_UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
    "in": ("length", 0.0254), "ft": ("length", 0.3048), "mi": ("length", 1609.344),
    "g": ("mass", 0.001), "kg": ("mass", 1.0), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
    "ml": ("volume", 0.001), "l": ("volume", 1.0), "gal": ("volume", 3.785411784),
    "s": ("time", 1.0), "min": ("time", 60.0), "h": ("time", 3600.0), "day": ("time", 86400.0),
}
_TEMPERATURES = {"c", "f", "k"}
_ALIASES = {"mile": "mi", "kilometer": "km", "kilometre": "km", "meter": "m", "metre": "m", "foot": "ft",
            "feet": "ft", "inch": "in", "inches": "in", "kilogram": "kg", "gram": "g", "pound": "lb", "ounce": "oz",
            "liter": "l", "litre": "l", "gallon": "gal", "second": "s", "minute": "min", "hour": "h",
            "celsius": "c", "fahrenheit": "f", "kelvin": "k"}
"""Unit names as people write them (a plural's trailing s is dropped first)."""


def _unit(name: str) -> str:
    unit = name.strip().lower()
    if unit in _UNITS or unit in _TEMPERATURES:
        return unit
    singular = unit[:-1] if unit.endswith("s") and unit != "s" else unit
    return _ALIASES.get(unit) or _ALIASES.get(singular) or unit


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression (numbers, + - * / // % ** and parentheses) and return the number.

    Args:
        expression: the arithmetic to do, for example "(12.5 + 7) * 3"
    """
    evaluator = SimpleEval(functions={}, names={})
    value = evaluator.eval(expression)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{expression}' is not arithmetic on numbers")
    return float(value)


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a quantity between units of length (mm cm m km in ft mi), mass (g kg lb oz), volume (ml l gal),
    time (s min h day) or temperature (c f k).

    Args:
        value: the quantity to convert
        from_unit: the unit it is in, for example "km"
        to_unit: the unit wanted, for example "mi"
    """
    source, target = _unit(from_unit), _unit(to_unit)
    if source in _TEMPERATURES and target in _TEMPERATURES:
        kelvin = {"c": value + 273.15, "f": (value - 32) * 5 / 9 + 273.15, "k": value}[source]
        return round({"c": kelvin - 273.15, "f": (kelvin - 273.15) * 9 / 5 + 32, "k": kelvin}[target], 6)
    if source not in _UNITS or target not in _UNITS:
        unknown = source if source not in _UNITS else target
        raise ValueError(f"unknown unit '{unknown}' (known: {', '.join([*_UNITS, *sorted(_TEMPERATURES)])})")
    if _UNITS[source][0] != _UNITS[target][0]:
        raise ValueError(f"cannot convert {_UNITS[source][0]} ({source}) to {_UNITS[target][0]} ({target})")
    return round(value * _UNITS[source][1] / _UNITS[target][1], 6)


def lookup_country(country: str, field: str) -> Any:
    """Look up a fact about a country in the local table: capital, population_millions, currency or area_km2.

    Args:
        country: the country's English name, for example "Japan"
        field: which fact: capital, population_millions, currency or area_km2
    """
    table = _table(os.environ.get(TABLE_ENV) or str(DEFAULT_TABLE))
    row = table.get(country.strip().lower())
    if row is None:
        raise ValueError(f"no country '{country}' in the table (it has: {', '.join(sorted(table))})")
    if field not in row:
        raise ValueError(f"no field '{field}' (fields: {', '.join(row)})")
    return row[field]


@lru_cache(maxsize=4)
def _table(path: str) -> dict[str, dict[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {str(name).lower(): dict(row) for name, row in data.items()}

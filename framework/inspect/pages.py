"""Our HTML pages (the run report, the graph page) from Jinja2 templates beside this module.

Autoescape is on for every template, so a string from a run or a graph (a record, a node name, an error
message, all possibly written by someone else) is escaped wherever a template prints it. Only markup we
make ourselves is passed through as `Markup` (the graph SVG, whose names are escaped where it is drawn).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).with_name("page_templates")


@cache
def environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_page(template: str, **values: Any) -> str:
    return environment().get_template(template).render(**values)

"""What every studio page shares: the templates (autoescaped), the runs a request may reach (by key, never
by path), and the run's graph, loaded once per version of its file."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..errors import SynthloomError
from .runs import Run, find_runs
from .security import TOKEN_FIELD, Guard

HERE = Path(__file__).parent
GUARD = web.AppKey("guard", Guard)
ROOTS = web.AppKey("roots", list)


@lru_cache(maxsize=1)
def templates() -> Environment:
    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["q"] = lambda value: quote(str(value), safe="")
    environment.filters["pretty"] = lambda value: json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return environment


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    guard = request.app[GUARD]
    text = templates().get_template(template).render(token=guard.token, token_field=TOKEN_FIELD, **values)
    return web.Response(text=text, content_type="text/html", status=status)


def runs_of(request: web.Request) -> dict[str, Run]:
    return find_runs(request.app[ROOTS])


def run_of(request: web.Request, key: str | None = None) -> Run:
    found = runs_of(request).get(key or request.match_info["run"])
    if found is None:
        raise NotFound("no such run among the folders this studio serves")
    return found


class NotFound(SynthloomError):
    """A run, record or file the studio does not serve: answered with 404, never a path outside its runs."""


def file_of(request: web.Request, run: Run) -> str:
    name = request.match_info["file"]
    if name not in run.files():
        raise NotFound(f"run {run.key} has no file '{name}'; it has {', '.join(run.files()) or 'none'}")
    return name


def graph_mtime(manifest: dict[str, Any]) -> float:
    """The graph file's modification time: part of `run_graph`'s cache key, so an edited graph is drawn anew."""
    graph_file = manifest.get("graph_file")
    try:
        return Path(graph_file).stat().st_mtime if isinstance(graph_file, str) else 0.0
    except OSError:
        return 0.0


@lru_cache(maxsize=16)
def run_graph(graph_file: str, mtime: float) -> Any:
    """The run's graph as `card.run_graph` loads it (its folder's Python read, never run), or None."""
    from ..inspect.card import run_graph as load_run_graph
    return load_run_graph({"graph_file": graph_file})

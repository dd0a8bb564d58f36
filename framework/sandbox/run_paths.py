"""Names a graph gives (nodes, pools, outputs) become paths in the run directory through `path_in_run` only.

A graph may come from a stranger, and `pool: /home/me/notes` or a node named `../../me/notes` would
otherwise name a file outside the run (`<run>/pools/<name>.jsonl`). `plain_name` is the one rule (config
validation uses it, so `validate` refuses such a name with one line); `path_in_run` applies it again and
checks that the resolved path stays inside the run directory (a symlinked `pools/` leading out is refused).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

NAME_RULE = "a plain name (no '/', '\\', control characters, not '.' or '..', not an absolute path)"


def plain_name_problem(name: object) -> str | None:
    """Why `name` cannot name a file in the run directory; None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "an empty name"
    if any(ch in name for ch in "/\\") or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "it holds a path separator or a control character"
    if name.strip(".") == "":
        return "it is only dots"
    return None


def plain_name(name: str, what: str) -> str:
    """`name`, or ValueError saying it must be a plain name (for pydantic validators and node params)."""
    problem = plain_name_problem(name)
    if problem is not None:
        raise ValueError(f"{what} '{name}' must be {NAME_RULE}: {problem}")
    return name


def path_in_run(directory: Path, folder: str | None, name: str, suffix: str = ".jsonl") -> Path:
    """`<directory>/<folder>/<name><suffix>`, for a plain `name` that stays inside `directory`."""
    problem = plain_name_problem(name)
    if problem is not None:
        raise ConfigError(f"'{name}' cannot name a file in the run directory ({problem}); use {NAME_RULE}")
    path = (directory / folder if folder else directory) / f"{name}{suffix}"
    root = directory.resolve()
    if not path.resolve().is_relative_to(root):
        raise ConfigError(f"{path} leads outside the run directory {root} (a symlink?); remove it")
    return path

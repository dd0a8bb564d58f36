"""The arrows between framework/'s concerns point one way (issue 21): a module imports only from its own
layer or the layers below it. Every import counts, wherever it is written: at the top, inside a function
(a deferred import is still a dependency, only a later one) and under `if TYPE_CHECKING:` (a type names
what a module knows about; a lower layer that needs an upper one's type takes a Protocol instead, as
sandbox/key_hosts.py and graph/context.py do).

Bottom to top; modules in one layer may import each other:
    base (errors, fast_json) <- sandbox <- config <- models <- graph, tools <- engine, store
    <- distributed, inspect <- studio <- api <- cli
The sandbox is below config: config's loader reads graph files through sandbox/files.py and its schema
checks names with sandbox/run_paths.py, while nothing in the sandbox needs more of a model than a protocol.
tools/ shares the graph's layer: the graph builds the toolbox and hands it out in the run context, and the
toolbox resolves Python tools through the graph's code policy; the tool loop, which generates, is engine/'s.
The studio (the web app of `synthloom studio`) sits on inspect: it shows runs with the report, card, diagram
and preview, and writes reviews through store/; the Python API does not need it, only the command starts it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

FRAMEWORK = Path(__file__).resolve().parents[1] / "framework"
LAYERS = [("errors", "fast_json"), ("sandbox",), ("config",), ("models",), ("graph", "tools"),
          ("engine", "store"), ("distributed", "inspect"), ("studio",), ("api",), ("cli",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_of(path: Path, root: Path = FRAMEWORK) -> list[str]:
    """`framework/engine/runner.py` -> ["engine", "runner"]; a package's __init__ is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def lazy_names(root: Path) -> dict[str, str]:
    """The package root's public names -> the module each is imported from on first use (its `_LAZY`)."""
    for node in ast.parse((root / "__init__.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            names: dict[str, str] = ast.literal_eval(node.value)
            return names
    return {}


def imported_modules(path: Path, root: Path = FRAMEWORK) -> list[tuple[int, list[str]]]:
    """(line, module under synthloom as parts) for each synthloom import in `path`, relative ones resolved.
    `from synthloom import x` (or `from .. import x` up to the root) gives one entry per name: the module x,
    or for a public name the module the root imports it from."""
    here = module_of(path, root)
    package = here if path.name == "__init__.py" else here[:-1]
    lazy = lazy_names(root)
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1:]) for alias in node.names
                      if alias.name.split(".")[0] == "synthloom"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level - 1 <= len(package), f"{path}:{node.lineno}: import above the package"
                module = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "synthloom":
                module = node.module.split(".")[1:]
            else:
                continue
            if module:
                found.append((node.lineno, module))
            else:  # from the package root: modules, or public names
                found += [(node.lineno, lazy.get(alias.name, "errors" if alias.name[0].isupper() else alias.name
                                                 ).split(".")) for alias in node.names]
    return found


def upward_imports(root: Path = FRAMEWORK) -> list[str]:
    """`file:line: <layer> imports <module> (...)` for each import of a layer above the file's own."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        own = module_of(path, root)
        if not own:
            continue  # the package root: lazy names for every layer (PEP 562), imported on first use
        for line, target in imported_modules(path, root):
            if target and target[0] in RANK and RANK[target[0]] > RANK[own[0]]:
                problems.append(f"framework/{path.relative_to(root)}:{line}: {own[0]} imports {'.'.join(target)} "
                                f"({target[0]} is above {own[0]})")
    return problems


def test_every_module_is_in_a_layer() -> None:
    unplaced = sorted({module_of(path)[0] for path in FRAMEWORK.rglob("*.py")
                       if module_of(path) and module_of(path)[0] not in RANK})
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    problems = upward_imports()
    assert not problems, "imports pointing up:\n" + "\n".join(problems)


@pytest.mark.parametrize("source,line,expected", [
    ("from ..engine.runner import Runner\n", 1, "engine.runner"),  # relative
    ("def f():\n    from synthloom.inspect import card\n", 2, "inspect"),  # inside a function
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..api import RunResult\n", 3, "api"),
    ("import synthloom.graph.node\n", 1, "graph.node"),
    ("from synthloom import run\n", 1, "api"),  # a public name of the root, by where it comes from
])
def test_an_upward_import_is_named_with_its_file_and_line(tmp_path: Path, source: str, line: int,
                                                         expected: str) -> None:
    """The check is not vacuous: a copy of framework/ with one upward import planted in sandbox/ fails,
    naming the file and line."""
    for path in FRAMEWORK.rglob("*.py"):
        copy = tmp_path / path.relative_to(FRAMEWORK)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "sandbox" / "planted.py").write_text(source, encoding="utf-8")
    assert upward_imports(tmp_path) == [
        f"framework/sandbox/planted.py:{line}: sandbox imports {expected} ({expected.split('.')[0]} is above sandbox)"]

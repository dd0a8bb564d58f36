"""The arrows between framework/'s concerns point one way (issue 21): a module imports only from its own
layer or the layers below it. Every import counts, wherever it is written: at the top, inside a function
(a deferred import is still a dependency, only a later one) and under `if TYPE_CHECKING:` (a type names
what a module knows about; a lower layer that needs an upper one's type takes a Protocol instead, as
sandbox/key_hosts.py and graph/context.py do).

Bottom to top; modules in one layer may import each other:
    base (errors, fast_json, measures) <- sandbox <- config <- models <- graph, tools <- engine, store
    <- distributed, inspect <- studio <- api <- cli
The sandbox is below config: config's loader reads graph files through sandbox/files.py and its schema
checks names with sandbox/run_paths.py, while nothing in the sandbox needs more of a model than a protocol.
tools/ shares the graph's layer: the graph builds the toolbox and hands it out in the run context, and the
toolbox resolves Python tools through the graph's code policy; the tool loop, which generates, is engine/'s.
The studio (the web app of `synthloom studio`) sits on inspect: it shows runs with the report, card, diagram
and preview, and writes reviews through store/; the Python API does not need it, only the command starts it.

The built-in nodes (nodes/) are registered exactly as a third-party plugin is, and the workflows' glue
(graphs/*.py) is code a graph names: both are plugins, held to what a plugin may use, the plugin API and the
engine's helpers (errors, measures, sandbox, config, models, graph, tools, engine), never the run directory's
store, distribution, inspection, the studio, the Python API or the command. Text measures a node shares with
the report live at the base (measures.py) for that reason. A plugin's relative imports stay in its own package.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
FRAMEWORK = REPOSITORY / "framework"
LAYERS = [("errors", "fast_json", "measures"), ("sandbox",), ("config",), ("models",), ("graph", "tools"),
          ("engine", "store"), ("distributed", "inspect"), ("studio",), ("api",), ("cli",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
PLUGIN_MAY_IMPORT = ("errors", "fast_json", "measures", "sandbox", "config", "models", "graph", "tools", "engine")
"""What a node plugin (and the workflows' glue) may import from synthloom: the plugin API and engine helpers."""
PLUGINS = (REPOSITORY / "nodes", REPOSITORY / "graphs")


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


def imported_modules(path: Path, root: Path = FRAMEWORK, plugin: bool = False) -> list[tuple[int, list[str]]]:
    """(line, module under synthloom as parts) for each synthloom import in `path`, relative ones resolved.
    `from synthloom import x` (or `from .. import x` up to the root) gives one entry per name: the module x,
    or for a public name the module the root imports it from. A `plugin`'s file lies outside `root`: its
    relative imports stay in its own package and are not synthloom's."""
    package: list[str] = []
    if not plugin:
        here = module_of(path, root)
        package = here if path.name == "__init__.py" else here[:-1]
    lazy = lazy_names(root)
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1:]) for alias in node.names
                      if alias.name.split(".")[0] == "synthloom"]
        elif isinstance(node, ast.ImportFrom):
            if node.level and plugin:
                continue
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


def plugin_imports_above_the_engine(folder: Path) -> list[str]:
    """`nodes/x.py:line: a plugin imports <module> (...)` for each synthloom import a plugin may not make."""
    problems = []
    for path in sorted(folder.rglob("*.py")):
        for line, target in imported_modules(path, plugin=True):
            if target and target[0] not in PLUGIN_MAY_IMPORT:
                problems.append(f"{folder.name}/{path.relative_to(folder)}:{line}: a plugin imports "
                                f"{'.'.join(target)} (plugins may import {', '.join(PLUGIN_MAY_IMPORT)})")
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


def test_no_plugin_imports_above_the_engine() -> None:
    """nodes/ and graphs/*.py use only the plugin API and the engine's helpers."""
    problems = [problem for folder in PLUGINS for problem in plugin_imports_above_the_engine(folder)]
    assert not problems, "plugins importing what a plugin may not:\n" + "\n".join(problems)


def test_what_a_plugin_may_import_is_a_whole_lower_part_of_the_layers() -> None:
    """Allowing a module means allowing what it imports: the plugin's list must be closed downwards."""
    highest = max(RANK[name] for name in PLUGIN_MAY_IMPORT)
    assert all(name in PLUGIN_MAY_IMPORT for name, rank in RANK.items() if rank < highest), PLUGIN_MAY_IMPORT


@pytest.mark.parametrize("source,line,expected", [
    ("from synthloom.inspect.metrics import words\n", 1, "inspect.metrics"),
    ("def f():\n    from synthloom.store import journal\n", 2, "store"),  # inside a function
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from synthloom.api import RunResult\n", 3, "api"),
    ("import synthloom.distributed.driver\n", 1, "distributed.driver"),
    ("from synthloom import build_report\n", 1, "inspect.report"),  # a public name of the root, by where it comes from
    ("from synthloom.engine.generate import generate\nfrom . import tagger\nimport synthloom.cli\n", 3, "cli"),
])
def test_a_plugins_import_above_the_engine_is_named_with_its_file_and_line(tmp_path: Path, source: str, line: int,
                                                                         expected: str) -> None:
    """The plugin check is not vacuous: a copy of nodes/ with one such import planted fails, naming the file
    and line (and an engine import or a relative one beside it passes)."""
    nodes = tmp_path / "nodes"
    for path in PLUGINS[0].rglob("*.py"):
        copy = nodes / path.relative_to(PLUGINS[0])
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (nodes / "planted.py").write_text(source, encoding="utf-8")
    assert plugin_imports_above_the_engine(nodes) == [
        f"nodes/planted.py:{line}: a plugin imports {expected} (plugins may import {', '.join(PLUGIN_MAY_IMPORT)})"]

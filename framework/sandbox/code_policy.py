"""Which Python a graph file may run, and how a reference to it is followed: the code-trust policy.

A graph file may come from a stranger, and every `package.module:Name` it writes (a node `type`, a python
node's `function`, an agent's `tools`, a langgraph `graph`, a pairs `verifier`, an `output_schema` model) is
code. All of them are resolved by `graph.registry.import_object`, which asks this policy *before importing
anything* whether the module may run (`find_object`):

- node types registered through the `synthloom.nodes` entry points (built-in and installed plugins), and the
  ready-made workflows' own modules (`synthloom_graphs`), which are part of synthloom;
- modules in the graph file's own folder, loaded from their file by path (`load_folder_module`): the folder
  is never put on `sys.path`, so nothing else in the process (a library looking for an optional module)
  can find a file planted there;
- modules the user allows: `--allow-code MODULE` / `allow_code=[...]`, the `SYNTHLOOM_ALLOW_CODE`
  environment variable, and the graph's own `run.allow_code` only when the user says `--trust-graph`.

The module half is not enough: a trusted module imports `os`, so `trusted.module:os.system` must not reach
it. The attribute path is therefore walked only through names the module's own source defines (a `def`,
`class` or assignment, read with `ast`; never a name it imported), through classes only, with no part
starting with `_`, and the object found must itself be defined in a module the policy allows (its
`__module__`). And installed code (synthloom's own packages, registered plugins) holds helpers that were
never meant for a graph's hands (a class that runs SQL from its arguments, a function that loops a count it
is given): from those modules a graph names only what is *exported for graphs* (`Found.installed`; the check
is `graph.registry`'s, since what counts as exported is the plugin API's `@node` functions and `Node`
subclasses besides a module's `__graph_api__`), never any public name. `synthloom validate` lists
graph-folder code from that reading of the source, without running it (`CodePolicy.run_folder_code = False`).
`CodePolicy.uses` lists what was let in.

The policy sits in the sandbox, below config and graph: it knows modules, sources and attribute paths, never
a node; the graph layer hands it the one node fact it needs (`find_object`'s `function_like`).
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ConfigError, did_you_mean, one_line
from .files import resolved_folders
from .key_hosts import KeyHosts, KeyUse, key_hosts

ENTRY_POINT_GROUP = "synthloom.nodes"
"""The entry-point group node plugins register in: its modules are code the user installed for graphs."""
TRUSTED_PACKAGES = ("synthloom_nodes", "synthloom_graphs")
"""Code shipped with synthloom that graphs name in full: the built-in nodes and the workflows' glue."""
ALLOW_CODE_ENV = "SYNTHLOOM_ALLOW_CODE"
INSTALLED_RULES = ("part of synthloom", "a registered node plugin")
"""The rules that let in installed code, which graphs may name only where it is exported for them."""


def within(module: str, package: str) -> bool:
    """`module` is `package` or one of its submodules."""
    return module == package or module.startswith(package + ".")


def allow_code_from_environment() -> tuple[str, ...]:
    return tuple(name.strip() for name in os.environ.get(ALLOW_CODE_ENV, "").split(",") if name.strip())


@dataclass(frozen=True)
class CodeUse:
    """One piece of Python a graph runs, and the rule that let it in."""

    where: str
    target: str
    reason: str


@dataclass
class CodePolicy:
    """Which modules a graph may import: see the module docstring."""

    folders: tuple[Path, ...] = ()
    allowed: tuple[str, ...] = ()
    requested: tuple[str, ...] = ()
    """The graph's own `run.allow_code`, shown in messages; part of `allowed` only with --trust-graph."""
    uses: list[CodeUse] = field(default_factory=list)
    where: str = ""
    """The key being built (`nodes.count`, `nodes.sub.count` inside subgraph `sub`), so `uses` can say who
    named the code."""
    subgraphs: tuple[str, ...] = ()
    """The subgraph nodes whose child graph is being built, outermost first (`at_node` prefixes them)."""
    run_folder_code: bool = True
    """False for `validate` and `show`: graph-folder modules are read (ast) and listed, never executed."""
    trust_graph: bool = False
    key_hosts: KeyHosts = field(default_factory=KeyHosts)
    read_folders: tuple[Path, ...] = ()
    """The folders the user allowed the graph to read and keep indexes in (`--allow-read`; see
    `graph_files`), besides SYNTHLOOM_ALLOW_READ's: they travel with the graph to its run and its shards."""
    """The hosts the user chose for API keys (see `key_hosts`): the same consent travels with the code's."""
    keys: list[KeyUse] = field(default_factory=list)
    """Where each model's key goes, for `synthloom validate` (subgraphs' models included)."""
    listed: int = 0
    """References listed without running (`run_folder_code` False): the graph keeps their nodes as
    placeholders (`graph.ListedNode`) whose keys are not checked."""

    @classmethod
    def for_graph(cls, folder: Path, allow_code: Iterable[str] = (), requested: Iterable[str] = (),
                  trust_graph: bool = False, run_folder_code: bool = True,
                  allow_key_hosts: Iterable[str] = (), allow_read: Iterable[str | Path] = ()) -> CodePolicy:
        """The user's consent: modules (`allow_code` and SYNTHLOOM_ALLOW_CODE), key hosts (`allow_key_hosts`
        and SYNTHLOOM_KEY_HOSTS), and `trust_graph`, which adds the graph's own `run.allow_code`."""
        requested = tuple(requested)
        allowed = (*allow_code, *allow_code_from_environment(), *(requested if trust_graph else ()))
        return cls(folders=(folder.resolve(),), allowed=tuple(dict.fromkeys(allowed)), requested=requested,
                   run_folder_code=run_folder_code or trust_graph, trust_graph=trust_graph,
                   key_hosts=key_hosts(allow_key_hosts, trust_graph), read_folders=resolved_folders(allow_read))

    def at_node(self, name: str) -> None:
        """Node `name` of the graph being built is next: `where` is its full path from the top graph."""
        self.where = "nodes." + ".".join((*self.subgraphs, name))

    @contextlib.contextmanager
    def inside_subgraph(self, name: str) -> Iterator[None]:
        """Build the child graph of subgraph node `name` (of the graph being built) under this policy."""
        outer, where = self.subgraphs, self.where
        self.subgraphs = (*outer, name)
        try:
            yield
        finally:
            self.subgraphs, self.where = outer, where

    @contextlib.contextmanager
    def active(self) -> Iterator[CodePolicy]:
        """Make this the policy for the references resolved in this context (nothing goes on sys.path)."""
        token = _policy.set(self)
        try:
            yield self
        finally:
            _policy.reset(token)

    def check(self, module_name: str) -> str:
        """The rule that lets `module_name` in; `ConfigError` naming the rule when none does."""
        return self._rule(module_name)[0]

    def _rule(self, module_name: str) -> tuple[str, Path | None]:
        """The rule, and the graph-folder file of the module's top level when it is loaded from there."""
        _check_module_name(module_name)
        if any(within(module_name, package) for package in TRUSTED_PACKAGES):
            return "part of synthloom", None
        if module_name in _plugin_modules():
            return "a registered node plugin", None
        top = module_name.split(".")[0]
        here = self._in_folder(top)
        found = _find_top(top)
        importable_here = here is not None and found is not None and _same_file(_origin(found), here)
        if here is not None and found is not None and not importable_here:
            raise ConfigError(f"module '{top}' in the graph's folder has the name of a module imported from "
                              f"elsewhere ({_origin(found)}); rename {here}")
        for name in self.allowed:
            if within(module_name, name):
                return f"allowed ({name})", None if importable_here else here
        if here is not None:
            return f"the graph's folder ({here})", here
        raise ConfigError(f"graph files may not run '{module_name}' ({self._what(top)}): only node types "
                          f"(`synthloom nodes`), modules in the graph's folder, and modules you allow with "
                          f"--allow-code {top} may run{self._requested_note(module_name)}")

    def _in_folder(self, top: str) -> Path | None:
        """The file (or package `__init__.py`) of module `top` in the graph's folder; finding imports nothing."""
        for folder in self.folders:
            spec = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
            if spec is not None and spec.origin and spec.origin not in ("namespace", "built-in"):
                return Path(spec.origin)
        return None

    def _what(self, top: str) -> str:
        if top in sys.stdlib_module_names:
            return "the standard library"
        if _find_top(top) is not None:
            return "an installed module"
        if self.folders:
            return f"no module of that name is installed or in the graph's folder {self.folders[0]}"
        return "no module of that name is installed"

    def _requested_note(self, module_name: str) -> str:
        if any(within(module_name, name) for name in self.requested):
            return "; the graph's run.allow_code asks for it, which counts only with --trust-graph"
        return ""


_policy: ContextVar[CodePolicy | None] = ContextVar("code_policy", default=None)


def current_policy() -> CodePolicy:
    """The policy of the graph being built; outside one, no folder and only the user's own allow-list."""
    policy = _policy.get()
    if policy is None:
        policy = CodePolicy(allowed=allow_code_from_environment())
    return policy


def _check_module_name(module_name: str) -> None:
    if module_name.startswith(".") or not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(f"'{module_name}' is not an absolute module name (write package.module:Name; "
                          f"relative imports are not allowed)")
    if any(part.startswith("_") for part in module_name.split(".")):
        raise ConfigError(f"'{module_name}': a graph may not name a private module (a part starting with _)")


def _find_top(top: str) -> Any:
    """Where a top-level module would be imported from; finding a top-level name imports nothing."""
    module = sys.modules.get(top)
    if module is not None:
        spec = getattr(module, "__spec__", None)
        if getattr(module, "__synthloom_graph_folder__", False):
            return None  # loaded from a graph's folder by path: not installed, not importable by name
        return spec
    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None


def _same_file(origin: str, path: Path) -> bool:
    try:
        return Path(origin).resolve() == path.resolve()
    except (OSError, ValueError):
        return False


def _origin(spec: Any) -> str:
    origin = getattr(spec, "origin", None)
    if origin and origin not in ("namespace", "built-in", "frozen"):
        return str(origin)
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    return str(locations[0] if locations else origin)


@lru_cache(maxsize=1)
def _plugin_modules() -> frozenset[str]:
    """The modules of the registered node plugins (read from their entry points, nothing imported)."""
    return frozenset(point.value.partition(":")[0].strip() for point in entry_points(group=ENTRY_POINT_GROUP))


# -- reading a module's source: what it defines, without running it ----------------------------------------

@dataclass(frozen=True)
class Definition:
    """How a module's source binds a name: `def`, `class`, `assign` (its own value) or `import`."""

    kind: str
    body: tuple[ast.stmt, ...] = ()
    """A class's body, so an attribute path can go on through it."""


def _definitions(statements: Iterable[ast.stmt]) -> dict[str, Definition]:
    """Names bound at this level of a module or class body (and inside its if/try blocks)."""
    found: dict[str, Definition] = {}
    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[statement.name] = Definition("def")
        elif isinstance(statement, ast.ClassDef):
            found[statement.name] = Definition("class", tuple(statement.body))
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for name_node in ast.walk(target):
                    if isinstance(name_node, ast.Name):
                        found.setdefault(name_node.id, Definition("assign"))
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                found.setdefault((alias.asname or alias.name).split(".")[0], Definition("import"))
        elif isinstance(statement, (ast.If, ast.Try, ast.With)):
            inner = [*statement.body, *getattr(statement, "orelse", []), *getattr(statement, "finalbody", [])]
            for handler in getattr(statement, "handlers", []):
                inner.extend(handler.body)
            for name, definition in _definitions(inner).items():
                found.setdefault(name, definition)
    return found


def _source_file(module_name: str, folder_file: Path | None) -> Path | None:
    """The .py file of a module, found without importing it (None: no source, e.g. a compiled module)."""
    if folder_file is not None:
        top, _, rest = module_name.partition(".")
        if not rest:
            return folder_file
        base = folder_file.parent if folder_file.name == "__init__.py" else None
        if base is None:
            return None
        candidate = base.joinpath(*rest.split("."))
        for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
            if path.is_file():
                return path
        return None
    module = sys.modules.get(module_name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(module_name)  # imports the parent packages, which the policy allowed
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
    return Path(origin) if origin and str(origin).endswith(".py") else None


def read_definition(module_name: str, attribute: str, source: Path | None) -> Definition | None:
    """What the module's source binds `attribute` (`Name` or `Class.member`) to; `ConfigError` when the path
    leaves the module (an imported name followed further, a private part) or names nothing there. None when
    there is no source to read."""
    parts = attribute.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ConfigError(f"'{one_line(attribute)}' is not a name (write package.module:Name)")
    if any(part.startswith("_") for part in parts):
        raise ConfigError(f"'{module_name}:{one_line(attribute)}': a graph may not name a private attribute "
                          f"(a part starting with _)")
    if source is None:
        return None
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as error:
        raise ConfigError(f"cannot read module '{module_name}' ({source}): {one_line(error)}") from None
    scope: Iterable[ast.stmt] = tree.body
    definition: Definition | None = None
    for index, part in enumerate(parts):
        defined = _definitions(scope)
        definition = defined.get(part)
        if definition is None:
            near = [".".join([*parts[:index], name]) for name in defined if not name.startswith("_")]
            suggestion = did_you_mean(".".join(parts[:index + 1]), near)
            raise ConfigError(f"module '{module_name}' has no '{one_line(attribute)}'"
                              f"{suggestion or f' (it must be defined in {source.name} itself)'}")
        if index + 1 < len(parts):
            if definition.kind != "class":
                raise ConfigError(f"'{module_name}:{attribute}' goes on through '{part}', which {source.name} "
                                  f"does not define as a class; name the object where it is defined")
            scope = definition.body
    return definition


# -- loading and following a reference -----------------------------------------------------------------------

def load_folder_module(module_name: str, folder_file: Path) -> ModuleType:
    """Import a module of the graph's folder from its file, by path (top level first, then submodules
    through the package's own `__path__`). It is registered in `sys.modules` under its name so that
    pickling (Ray) and pydantic find it, but no folder goes on `sys.path`, so only the modules a graph
    names are ever loaded from there."""
    top, _, rest = module_name.partition(".")
    module = sys.modules.get(top)
    if module is None or not _same_file(str(getattr(module, "__file__", None)), folder_file):
        is_package = folder_file.name == "__init__.py"
        spec = importlib.util.spec_from_file_location(
            top, folder_file, submodule_search_locations=[str(folder_file.parent)] if is_package else None)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load module '{top}' from {folder_file}")
        module = importlib.util.module_from_spec(spec)
        module.__synthloom_graph_folder__ = True  # type: ignore[attr-defined]
        for name in [key for key in sys.modules if within(key, top)]:
            del sys.modules[name]  # another graph's module of the same name: this graph's file wins
        sys.modules[top] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(top, None)
            raise
    return importlib.import_module(module_name) if rest else module


@dataclass(frozen=True)
class Found:
    """An object a graph names, found and let in by the policy, before the graph layer's exported-for-graphs
    check (`graph.registry.import_object`) and before it is recorded in `CodePolicy.uses`."""

    path: str
    module: ModuleType
    attribute: str
    target: Any
    reason: str
    """The rule that let the module in (`CodePolicy.check`)."""

    @property
    def installed(self) -> bool:
        """Installed code (synthloom's own, a registered plugin): a graph may name only what it exports."""
        return self.reason in INSTALLED_RULES


def find_object(path: str, *, function_like: tuple[type, ...] = ()) -> Found:
    """`package.module:attribute` -> the object, if the current `CodePolicy` lets its module in, the attribute
    path is defined in the module's own source and the object comes from an allowed module (see the module
    docstring). `function_like`: types whose instances stand for a function and say where it was defined in
    their `__module__` (the graph layer's `@node` functions), checked as functions are. Half of resolving a
    graph's reference: call `graph.registry.import_object`, which adds the exported-for-graphs check."""
    if not isinstance(path, str):
        raise ConfigError(f"{one_line(path)} should be a string like package.module:Name")
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"'{one_line(path)}' should look like package.module:Name")
    policy = current_policy()
    reason, folder_file = policy._rule(module_name)
    definition = read_definition(module_name, attribute, _source_file(module_name, folder_file))
    if folder_file is not None and not policy.run_folder_code and not reason.startswith("allowed"):
        if definition is None or definition.kind == "import":
            raise ConfigError(f"'{path}' is not defined in {folder_file.name} itself; name the object where it "
                              f"is defined")
        policy.uses.append(CodeUse(policy.where, path, reason + "; read, not run"))
        policy.listed += 1
        raise ConfigError(f"'{path}' was listed, not run")
    try:
        module = load_folder_module(module_name, folder_file) if folder_file is not None \
            else importlib.import_module(module_name)
    except ImportError as error:
        missing = (getattr(error, "name", None) or "").split(".")[0]
        hint = (f"; the graph's folder is not on the import path, so make {missing}.py part of one package "
                f"with it (a folder with __init__.py, imported as `from . import {missing}`)"
                if folder_file is not None and missing and policy._in_folder(missing) else "")
        raise ConfigError(f"cannot import '{module_name}' ({one_line(error)}){hint}") from None
    except Exception as error:  # the module's own top-level code failed: still the user's file to fix
        raise ConfigError(f"importing '{module_name}' failed: {type(error).__name__}: {one_line(error)}") \
            from None
    target: Any = module
    parts = attribute.split(".")
    for depth, part in enumerate(parts):
        try:
            target = getattr(target, part)
        except AttributeError:
            near = [".".join([*parts[:depth], name]) for name in dir(target) if not name.startswith("_")]
            raise ConfigError(f"module '{module_name}' has no '{one_line(attribute)}'"
                              f"{did_you_mean('.'.join(parts[:depth + 1]), near)}") from None
    _check_defined_here(path, module_name, target, definition, policy, function_like)
    return Found(path, module, attribute, target, reason)


def _check_defined_here(path: str, module_name: str, target: Any, definition: Definition | None,
                        policy: CodePolicy, function_like: tuple[type, ...]) -> None:
    """The object must come from a module the policy allows: a function's or class's `__module__`, a
    module's own name; any other object (a compiled LangGraph app, a tool) must be assigned in the
    module's own source."""
    if isinstance(target, ModuleType):
        owner: str | None = target.__name__
    elif inspect.isroutine(target) or inspect.isclass(target) or isinstance(target, function_like):
        owner = getattr(target, "__module__", None)
    else:
        if definition is None or definition.kind != "assign":
            raise ConfigError(f"'{path}' is not a function, class or object defined in '{module_name}'; name "
                              f"the object where it is defined")
        return
    if not isinstance(owner, str):
        raise ConfigError(f"'{path}' does not say which module defines it, so it may not run")
    try:
        policy.check(owner)
    except ConfigError:
        raise ConfigError(f"'{path}' is '{owner}' code reached through '{module_name}'; graph files may not "
                          f"run it (only what node types, the graph's folder and --allow-code modules define)") \
            from None

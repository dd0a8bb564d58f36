"""The graph's `tools:` entries for one run: built (and their code consented to) with the graph, MCP
sessions opened once before the first record and closed after the last, and every call kept inside its
entry's limits: arguments checked against the schema, a timeout, a budget of calls per record and a cap on
the size of a result. A call that fails in any of these ways comes back as a failed `ToolResult` whose text
the model reads, never as an exception that loses the record."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from ..config.schema import ToolConfig
from ..errors import ConfigError, one_line
from ..graph.registry import import_object
from ..sandbox.code_policy import TRUSTED_PACKAGES, CodePolicy, CodeUse
from .definitions import Tool, python_tool
from .mcp_servers import McpServer, ToolFailed
from .threads import ToolThreads, ToolThreadsHung

PYTHONS = ("python", "python3")
"""A command starting with one of these and `-m module` runs a module, consented to like any code a graph
names; it runs in synthloom's own interpreter."""


@dataclass(frozen=True)
class ToolResult:
    """What a call gave: the text fed back to the model, and whether the call worked."""

    text: str
    ok: bool
    seconds: float = 0.0


@dataclass
class Toolbox:
    """The tools of one run, by `tools:` entry name."""

    configs: dict[str, ToolConfig] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)
    python: dict[str, list[Tool]] = field(default_factory=dict)
    """Python entries' tools, made when the graph is built."""
    threads: dict[str, ToolThreads] = field(default_factory=dict)
    """Python entries' own threads for their sync functions."""
    nested: dict[str, Toolbox] = field(default_factory=dict)
    """Subgraph nodes' own toolboxes, by node name, so the run's figures count their threads too."""
    native_refused: set[str] = field(default_factory=set)
    """Models whose server refused native tool calls: the rest of the run asks them in constrained JSON."""
    _servers: dict[str, McpServer] = field(default_factory=dict)
    _served: dict[str, list[Tool]] = field(default_factory=dict)
    _lock: asyncio.Lock | None = None

    @classmethod
    def build(cls, configs: dict[str, ToolConfig], code: CodePolicy, base_dir: Path) -> Toolbox:
        """Resolve the Python functions (through `import_object`, so the code policy applies) and check
        that each MCP command may run; nothing is started here. `ConfigError` names the entry's key."""
        box = cls(dict(configs), base_dir)
        for entry, config in configs.items():
            if config.python is not None:
                box.threads[entry] = ToolThreads(entry, config.threads, config.timeout)
                box.python[entry] = _python_tools(entry, config.python, code, box.threads[entry])
            elif config.command is not None:
                _consent_to_command(entry, config.command, code)
        return box

    def check_entry(self, entry: str) -> None:
        if entry not in self.configs:
            known = ", ".join(self.configs) or "none: add a top-level tools: section"
            raise ConfigError(f"unknown tools entry '{entry}' (known: {known})")

    async def start(self, entries: Iterable[str]) -> None:
        """Open the MCP sessions of `entries` that are not open yet (nodes call this in their setup)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for entry in entries:
                config = self.configs[entry]
                if config.python is not None or entry in self._servers:
                    continue
                folder = self._server_folder(config)
                server = McpServer(entry, config, folder, from_folder=folder == self.base_dir)
                self._servers[entry] = server
                self._served[entry] = await server.start()

    def _server_folder(self, config: ToolConfig) -> Path:
        """A graph-folder module runs from the graph's folder; anything else from the working directory."""
        module = _python_module(config.command) if config.command else None
        top = module.split(".")[0] if module else None
        if top is not None and ((self.base_dir / f"{top}.py").is_file() or (self.base_dir / top).is_dir()) \
                and not any(top == package for package in TRUSTED_PACKAGES):
            return self.base_dir
        return Path.cwd()

    def tools(self, entries: Iterable[str]) -> list[Tool]:
        """The tools of `entries`, in order; an MCP entry's only once its session is open."""
        found: list[Tool] = []
        for entry in entries:
            if entry in self.python:
                found += self.python[entry]
            elif entry in self._served:
                found += self._served[entry]
            else:
                raise RuntimeError(f"tools entry '{entry}' used before its MCP session was started")
        names = [tool.name for tool in found]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ConfigError(f"two tools are named {', '.join(doubled)} across tools entries "
                              f"{', '.join(entries)}; keep one with `only:`")
        return found

    async def call(self, tool: Tool, arguments: Any, spent: MutableMapping[str, int]) -> ToolResult:
        """Run `tool` within its entry's limits; `spent` counts this record's calls per entry."""
        config = self.configs[tool.entry]
        started = time.perf_counter()
        if spent.get(tool.entry, 0) >= config.max_calls:
            return ToolResult(f"not called: this conversation has used its {config.max_calls} calls of "
                              f"'{tool.entry}' tools; answer with what you have", ok=False)
        spent[tool.entry] = spent.get(tool.entry, 0) + 1
        if not isinstance(arguments, dict):
            return ToolResult(f"invalid arguments: expected a JSON object, got {one_line(arguments, 80)}", ok=False)
        problem = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(tool.parameters)
                                                   .iter_errors(arguments))
        if problem is not None:
            at = ".".join(str(part) for part in problem.absolute_path) or "the arguments"
            return ToolResult(f"invalid arguments at {at}: {problem.message}", ok=False)
        try:
            text = await asyncio.wait_for(tool.invoke(arguments), config.timeout)
        except TimeoutError:
            return ToolResult(f"{tool.name} gave no result within {config.timeout:g}s", ok=False,
                              seconds=time.perf_counter() - started)
        except (ToolFailed, ToolThreadsHung) as error:
            return ToolResult(str(error), ok=False, seconds=time.perf_counter() - started)
        except Exception as error:  # the tool's own failure is the model's to read, not the run's
            return ToolResult(f"{type(error).__name__}: {one_line(error, 500)}", ok=False,
                              seconds=time.perf_counter() - started)
        if len(text) > config.max_result_chars:
            text = (text[:config.max_result_chars] + f"\n[cut: the result has {len(text)} characters; the first "
                    f"{config.max_result_chars} are shown]")
        return ToolResult(text, ok=True, seconds=time.perf_counter() - started)

    def thread_figures(self) -> dict[str, dict[str, int]]:
        """Each python entry's threads and how many calls outlived their timeout (manifest, progress)."""
        figures = {entry: threads.figures() for entry, threads in self.threads.items()}
        for node, toolbox in self.nested.items():
            figures |= {f"{node}.{entry}": child for entry, child in toolbox.thread_figures().items()}
        return figures

    async def close(self) -> None:
        """Close every MCP session (their server processes end); safe to call twice. A sync tool's call
        that outlived its timeout is not waited for: its daemon thread holds neither the run nor the exit."""
        servers, self._servers, self._served = self._servers, {}, {}
        await asyncio.gather(*(server.close() for server in servers.values()), return_exceptions=True)


def _python_tools(entry: str, paths: list[str], code: CodePolicy, threads: ToolThreads) -> list[Tool]:
    tools = []
    for index, path in enumerate(paths):
        code.where = f"tools.{entry}.python.{index}"
        try:
            function = import_object(path)
        except ConfigError as error:
            if error.message.endswith("was listed, not run"):  # validate: read, not run
                continue
            raise ConfigError(error.message, key=code.where) from None
        if not callable(function):
            raise ConfigError(f"'{path}' is not a function", key=code.where)
        try:
            tools.append(python_tool(function, entry, threads))
        except Exception as error:  # a signature no JSON schema can describe
            raise ConfigError(f"'{path}' cannot be described as a tool: {one_line(error)}", key=code.where) \
                from None
    return tools


def _python_module(command: list[str]) -> str | None:
    """The module of `[python, -m, module, ...]`, else None."""
    if len(command) >= 3 and os.path.basename(command[0]) in PYTHONS and command[1] == "-m":
        return command[2]
    return None


def _consent_to_command(entry: str, command: list[str], code: CodePolicy) -> None:
    """An MCP server command is code: `python -m module` passes where the module would (node types,
    synthloom's own workflows, the graph's folder, --allow-code); any other program needs --allow-code
    PROGRAM or --trust-graph. The use is listed for `validate`."""
    where = f"tools.{entry}.command"
    module = _python_module(command)
    shown = one_line(" ".join(command), 200)
    if module is not None:
        try:
            reason = code.check(module)
        except ConfigError as error:
            raise ConfigError(f"this MCP server runs Python: {error.message}", key=where) from None
    else:
        program = os.path.basename(command[0])
        allowed = [name for name in code.allowed if name in (program, command[0])]
        if allowed:
            reason = f"allowed ({allowed[0]})"
        elif code.trust_graph:
            reason = "--trust-graph"
        else:
            raise ConfigError(f"this MCP server starts the program '{one_line(command[0], 80)}', which a graph "
                              f"may run only with --allow-code {program} or --trust-graph (or write "
                              f"[python, -m, module] for a Python server)", key=where)
    code.uses.append(CodeUse(where, shown, reason))


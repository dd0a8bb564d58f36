"""MCP servers as tool sources, through the official `mcp` SDK: one session per `tools:` entry, opened once
per run and closed at its end.

Each session is held open by a task of its own: the SDK's transports live in anyio cancel scopes that must
be left by the task that entered them, while records call tools from many tasks. A stdio server runs in a
session (process group) of its own, so a Ctrl-C meant for synthloom does not reach it; it is stopped when
the run closes its session, and exits on the end of its stdin if synthloom itself is killed."""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.schema import ToolConfig
from ..errors import ConfigError, one_line
from .definitions import Tool

if TYPE_CHECKING:
    from mcp import Client, StdioServerParameters

CLOSE_SECONDS = 5.0
"""How long a server may take to stop once its session closes, before its task is cancelled."""


class ToolFailed(Exception):
    """A tool call that failed in a way the model should be told of (the server's own error text)."""


class McpServer:
    """One MCP server of a run: `start` lists its tools, `call` runs one, `close` ends the session."""

    def __init__(self, entry: str, config: ToolConfig, cwd: Path, *, from_folder: bool = False):
        self.entry = entry
        self.config = config
        self.cwd = cwd
        self.from_folder = from_folder
        """A `python -m` module of the graph's folder: run from there. Any other module runs with `-P`, so a
        planted folder of the same name in the working directory cannot stand in for it."""
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._tools: list[Tool] = []

    def _target(self) -> StdioServerParameters | str:
        from mcp import StdioServerParameters  # imported when a run opens a session (a second to import)
        if self.config.url is not None:
            return self.config.url
        assert self.config.command is not None
        command, *args = self.config.command
        if command in ("python", "python3"):
            command = sys.executable  # the interpreter synthloom runs in, where `-m synthloom_graphs...` is
            args = args if self.from_folder else ["-P", *args]
        return StdioServerParameters(command=command, args=args, cwd=str(self.cwd))

    def _describe(self) -> str:
        return self.config.url or " ".join(self.config.command or ())

    async def start(self) -> list[Tool]:
        """Open the session and list the server's tools; `ConfigError` when it cannot be started."""
        self._task = asyncio.create_task(self._hold(), name=f"mcp-{self.entry}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            done, _ = await asyncio.wait({self._task, ready}, timeout=self.config.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._task in done:
            error = self._task.exception()
            raise ConfigError(f"MCP server '{self._describe()}' did not start: "
                              f"{one_line(_innermost(error), 300)}", key=f"tools.{self.entry}")
        if not done:
            await self.close()
            raise ConfigError(f"MCP server '{self._describe()}' gave no list of tools within {self.config.timeout:g}s "
                              f"(raise tools.{self.entry}.timeout if it is slow to start)", key=f"tools.{self.entry}")
        return self._tools

    async def _hold(self) -> None:
        from mcp import Client
        async with Client(self._target(), read_timeout_seconds=self.config.timeout, mode="legacy") as client:
            self._client = client
            listed = await client.list_tools()
            offered = [tool for tool in listed.tools if self.config.only is None or tool.name in self.config.only]
            missing = sorted(set(self.config.only or ()) - {tool.name for tool in listed.tools})
            if missing:
                raise ValueError(f"it has no tool named {', '.join(missing)} (it has "
                                 f"{', '.join(tool.name for tool in listed.tools)})")
            self._tools = [Tool(tool.name, tool.description or tool.name, dict(tool.input_schema), self.entry,
                                self._invoker(tool.name)) for tool in offered]
            self._ready.set()
            await self._stop.wait()
            self._client = None

    def _invoker(self, name: str) -> Any:
        async def invoke(arguments: dict[str, Any]) -> str:
            return await self.call(name, arguments)
        return invoke

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        if self._client is None:
            raise ToolFailed(f"the MCP server of '{self.entry}' is not running")
        result = await self._client.call_tool(name, arguments)
        text = "\n".join(getattr(part, "text", "") or f"[{part.type} content]" for part in result.content)
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content, ensure_ascii=False)
        if result.is_error:
            raise ToolFailed(text or "the tool reported an error")
        return text

    async def close(self) -> None:
        """End the session (a stdio server's process with it); safe to call twice or before `start`."""
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except BaseException:  # noqa: BLE001 - the session's own failure was reported at start or at call
            pass


def _innermost(error: BaseException | None) -> BaseException | str:
    """The first leaf of an exception group (anyio task groups wrap what went wrong)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error if error is not None else "no reason given"

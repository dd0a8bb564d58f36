"""A small MCP server over stdio that synthloom ships for the function_calling workflow and its tests:
`python -m synthloom_graphs.tool_server [--table FILE]` offers the calculator, unit conversion and country
lookup of `synthloom_graphs.toolkit`, through the official `mcp` SDK's `MCPServer`."""
from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from . import toolkit


def build_server() -> MCPServer:
    server = MCPServer("synthloom-toolkit")
    for function in (toolkit.calculate, toolkit.convert_units, toolkit.lookup_country):
        server.add_tool(_told(function))
    return server


def _told(function: Callable[..., Any]) -> Callable[..., Any]:
    """A wrong argument (an unknown unit, 1/0) is an answer the model should read, not a crash whose text the
    SDK keeps to itself: it is raised as the SDK's `ToolError`, whose message reaches the client."""
    @functools.wraps(function)
    def told(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every failure of these tools is the caller's to read
            raise ToolError(f"{type(error).__name__}: {error}") from None
    return told


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", help="a JSON file of {country: {field: value}} for lookup_country")
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp "
                        "instead of stdio")
    args = parser.parse_args()
    if args.table:
        os.environ[toolkit.TABLE_ENV] = args.table
    logging.disable(logging.CRITICAL)  # stderr is the user's terminal: the client reports failed calls
    if args.http is not None:
        build_server().run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        build_server().run("stdio")


if __name__ == "__main__":
    main()

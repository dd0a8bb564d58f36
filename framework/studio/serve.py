"""Start the studio: bind, print the address (with the token when it must be typed), serve until Ctrl-C."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .app import make_app
from .pages import GUARD


async def start_studio(roots: list[Path], host: str, port: int) -> tuple[web.AppRunner, str]:
    """A running studio (port 0: any free port) and its address; stop it with `await runner.cleanup()`."""
    app = make_app(roots, host, port)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    if port == 0:  # the Host check needs the port the OS picked
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        app[GUARD].port = int(sockets[0].getsockname()[1])
    return runner, app[GUARD].url()


def serve_studio(roots: list[Path], host: str, port: int, announce: Callable[[str], None]) -> None:
    async def main() -> None:
        runner, url = await start_studio(roots, host, port)
        announce(f"synthloom studio on {url} (Ctrl-C to stop)")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

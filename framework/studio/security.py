"""What keeps a local web app over run directories safe when a browser visits other sites meanwhile.

- DNS rebinding: a page elsewhere may point its own name at 127.0.0.1; the Host header then names that site,
  so any Host but the studio's own address is refused.
- Bound to an interface other than loopback, every request needs the token printed at start (in the URL
  once; a strict same-site cookie after that).
- A review or an edit changes files: it must be a POST from the studio's own origin carrying the token, so
  a form on another site cannot submit one (cross-site request forgery).
- Every page forbids scripts, styles and frames from anywhere but the studio (Content-Security-Policy), so
  even a record that slipped past escaping could run nothing.
"""
from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN_COOKIE = "studio_token"
TOKEN_FIELD = "_token"
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
INLINE_STYLE_POLICY = POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
"""For the comparison page, which is the run report's own page (its styles are inline; it has no script)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    host: str
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def needs_token_to_read(self) -> bool:
        return not is_loopback(self.host)

    def allowed_hosts(self) -> set[str]:
        names = {self.host}
        if is_loopback(self.host):
            names |= {"localhost", "127.0.0.1", "[::1]"}
        elif ":" in self.host and not self.host.startswith("["):
            names.add(f"[{self.host}]")
        return {f"{name}:{self.port}" for name in names} | ({*names} if self.port == 80 else set())

    def origins(self) -> set[str]:
        return {f"http://{host}" for host in self.allowed_hosts()}

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.needs_token_to_read else "")

    def token_ok(self, given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in self.allowed_hosts():
            return _refuse(421, "this studio answers only at its own address (the Host header names another)")
        if self.needs_token_to_read:
            if self.token_ok(request.query.get("token")):
                target = request.rel_url.without_query_params("token")
                moved = web.Response(status=303, headers={"Location": str(target)})
                moved.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict")
                return moved
            if not self.token_ok(request.cookies.get(TOKEN_COOKIE)):
                return _refuse(403, "open the address with the token the studio printed at start")
        if request.method not in ("GET", "HEAD"):
            if request.headers.get("Origin") not in self.origins():
                return _refuse(403, "changes are accepted only from the studio's own pages")
            form = await request.post()
            given = form.get(TOKEN_FIELD)
            if not self.token_ok(given if isinstance(given, str) else None):
                return _refuse(403, "this form has no valid token; reload the page and try again")
        try:
            response = await handler(request)
        except web.HTTPException as raised:  # a redirect or a 404 raised by aiohttp or a handler
            _protect(raised.headers)
            raise
        _protect(response.headers)
        return response


def _protect(headers: Any) -> None:
    headers.setdefault("Content-Security-Policy", POLICY)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes Chromium send `Origin: null` with a form
    headers["X-Frame-Options"] = "DENY"


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain",
                        headers={"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff"})

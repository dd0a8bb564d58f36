"""Secrets out of everything a run writes: credentials in URLs (`http://user:pass@host`, `?api_key=...`) and
values of secret-looking settings (`params: {extra_body: {api_key: ...}}`, at any depth).

One place, used by the manifest, the dataset card (its models table and the graph file it quotes) and the
model clients' error messages (which reach `failed.jsonl` and the logs).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "<hidden>"

SECRET_NAME = re.compile(r"key|secret|password|passwd|pwd|auth|bearer|credential|cookie|signature|"
                         r"(?<![a-z])token(?!s)", re.IGNORECASE)
"""A setting whose name says it holds a secret (`max_tokens` does not: `token` must not be followed by s)."""

NOT_SECRET = frozenset({"api_key_env"})
"""Settings that name where a secret is kept, never the secret: shown as they are."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def is_secret_name(name: Any) -> bool:
    return isinstance(name, str) and name not in NOT_SECRET and bool(SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The URL without its userinfo and with secret-looking query values hidden."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return re.sub(r"//[^/@\s]*@", "//", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = (parts.hostname or "") + (f":{port}" if port else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(name) for name, _ in pairs):
            query = urlencode([(name, HIDDEN if is_secret_name(name) else value) for name, value in pairs])
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact(value: Any) -> Any:
    """A copy of a settings tree with every secret-named value hidden and every URL's credentials removed."""
    if isinstance(value, dict):
        return {key: (HIDDEN if is_secret_name(key) else redact(item)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    """Free text (an error message, a line of a log) with the credentials of every URL in it removed."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def secret_values(value: Any) -> Iterator[str]:
    """Every secret string a settings tree holds: secret-named values (at any depth) and URL credentials, so
    a verbatim copy of the file (the card's "Graph file") can have them cut out wherever they stand."""
    if isinstance(value, dict):
        for key, item in value.items():
            if is_secret_name(key):
                yield from _strings(item)
            else:
                yield from secret_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from secret_values(item)
    elif isinstance(value, str) and "://" in value:
        for match in _URL.finditer(value):
            yield from _url_secrets(match.group(0))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value):
        yield str(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _url_secrets(url: str) -> Iterator[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if "@" in parts.netloc:
        yield parts.netloc.rpartition("@")[0]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if is_secret_name(name) and value:
            yield value


def scrub(text: str, secrets: Iterator[str] | list[str]) -> str:
    """`text` with each secret (longest first) replaced by HIDDEN, and URL credentials removed."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:  # a one- or two-character value would cut up ordinary words
            text = text.replace(secret, HIDDEN)
    return redact_text(text)

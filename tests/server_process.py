"""Helpers for tests that start a real model server in a process of its own (llama-cpp-python's, vLLM's):
a free loopback port, and whether the server answers yet."""
from __future__ import annotations

import socket
import urllib.request


def free_port() -> int:
    """A loopback port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str, timeout: float = 5.0) -> bool:
    """True once the OpenAI-compatible server at `url` (a /v1 base URL) lists its models."""
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False

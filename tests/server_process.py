"""Helpers for tests that start a real model server in a process of its own (llama-cpp-python's, vLLM's):
a free loopback port, and whether the server answers yet."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


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


@contextmanager
def served(name: str, command: list[str], url: str, log: Path, *, start_timeout_s: float, poll_s: float,
           stop_timeout_s: float, env: dict[str, str] | None = None, answer_timeout_s: float = 5.0) -> Iterator[str]:
    """Start `command` (a server logging to `log`), wait until `url` lists its models, yield `url`; terminate it
    afterwards (killed if it does not stop in `stop_timeout_s`). A server that exits or never answers fails the
    test with the end of its log."""
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not answers(url, timeout=answer_timeout_s):
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer /v1/models in {start_timeout_s:g}s")
            time.sleep(poll_s)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

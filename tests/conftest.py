"""Shared fixtures: the fixture OpenAI server, an isolated response cache, and graph-file helpers."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

from tests.fixture_server import FakeOpenAI

# Under CI (CI=true) the property tests are derandomized: the same examples on every run, each test's seed
# derived from the test itself, and a failure prints the blob that reproduces it. Elsewhere they draw anew.
settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption("hypothesis_seed", default=None)
    how = ("derandomized: each test's seed is derived from its name" if settings.default.derandomize
           else f"seed {seed}" if seed is not None else "random seed (printed with any failure)")
    return f"hypothesis: profile '{settings.get_current_profile_name()}', {how}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A real-model test (embedded or vLLM) is a slow test too, so `-m "not slow"` is the quick suite."""
    for item in items:
        if item.get_closest_marker("embedded") is not None or item.get_closest_marker("vllm") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own response cache so no test sees another's answers."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SYNTHLOOM_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(autouse=True)
def tests_may_run_their_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Graphs written by tests name nodes in `tests.plugins_for_tests`: the user (the test suite) allows them,
    as SYNTHLOOM_ALLOW_CODE lets a user allow their own installed modules."""
    monkeypatch.setenv("SYNTHLOOM_ALLOW_CODE", "tests")


@pytest.fixture
def fake_llm() -> Iterator[Callable[..., FakeOpenAI]]:
    """Start fixture servers with given options; all are stopped after the test."""
    servers: list[FakeOpenAI] = []

    def start(**options: Any) -> FakeOpenAI:
        server = FakeOpenAI(**options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def model_spec(server: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {"backend": "openai", "base_url": server.url, "model": server.model, "max_concurrency": 8,
            "timeout": 5, **extra}


@pytest.fixture
def write_graph(tmp_path: Path) -> Callable[..., Path]:
    """Write a graph dict (and optional seed rows) as files under tmp_path; return the graph's path."""

    def write(spec: dict[str, Any], seeds: list[dict[str, Any]] | None = None, name: str = "graph.yaml") -> Path:
        if seeds is not None:
            import json
            (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(row) + "\n" for row in seeds))
            spec.setdefault("seed", {"source": {"type": "jsonl", "path": "seeds.jsonl"}})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write

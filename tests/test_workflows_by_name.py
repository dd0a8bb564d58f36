"""Every ready-made workflow in graphs/ validates, runs by its name through the CLI, and is listed by
`synthloom list` with its description."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import synthloom
import yaml

from tests.fixture_server import FakeOpenAI

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"
WORKFLOWS = sorted(GRAPHS.glob("*.yaml"))  # collected now: a workflow added later gets its own test


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}  # rich wraps at the terminal width; keep each workflow on one line
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.stem)
def test_workflow_validates(path: Path) -> None:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert spec["name"] == path.stem, "a workflow runs by its file name; its name should be the same"
    description = spec.get("description", "")
    assert isinstance(description, str) and description.strip() and "\n" not in description.strip()
    graph = synthloom.load(path)
    assert graph.config.outputs


def test_run_by_name_through_the_cli(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*")  # structured replies come back as schema examples: answer "A"
    out = tmp_path / "run"
    done = cli("run", "sycophancy", "-n", "3", "--endpoint", server.url, "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert "sycophancy completed" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["seeded"] == 3
    assert server.successes == 3
    sft = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert len(sft) == manifest["counts"]["outputs"]["sft"] == 3 - manifest["counts"]["dropped"]
    assert all(record["messages"][1]["content"].startswith("(A)") for record in sft)  # kept: truth is A

    unknown = cli("run", "no_such_workflow", "-o", str(tmp_path / "none"))
    assert unknown.returncode == 2 and "no_such_workflow" in unknown.stderr


def test_list_shows_every_workflow_with_its_description() -> None:
    done = cli("list")
    assert done.returncode == 0, done.stderr
    listed = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    expected = {path.stem: yaml.safe_load(path.read_text(encoding="utf-8"))["description"] for path in WORKFLOWS}
    assert {name: text.strip() for name, text in listed.items()} == {name: text.strip()
                                                                      for name, text in expected.items()}

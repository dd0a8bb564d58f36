"""The CLI a new user meets first: `--help` that reads cleanly, and `list`, `validate` and `show` that do not
import the engine, the report, the card or the hub (what a command imports is read from
`python -X importtime`, so the test does not depend on how fast the machine is)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"synthloom.engine.runner", "synthloom.inspect.report", "synthloom.inspect.card", "synthloom.inspect.hub",
         "synthloom.inspect.preview", "synthloom.distributed.driver", "synthloom.models.llama.client",
         "synthloom.engine.progress", "aiohttp", "datasets"}


def cli(*args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def imported(done: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("command", ["run", "validate", "show", "preview", "report", "push", "nodes"])
def test_help_prints_no_type_beside_a_flag(command: str) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "--help" in done.stdout
    assert "<bool>" not in done.stdout and "<list[str]>" not in done.stdout, done.stdout


def test_run_help_names_what_flags_take() -> None:
    text = cli("run", "--help").stdout
    assert "--set KEY=VALUE" in text and "--endpoint URL" in text and "--allow-code MODULE" in text
    assert "--resume " in text and "finish an interrupted run" in text


@pytest.mark.parametrize("args,needs", [
    (["list"], set()),
    (["validate", "quickstart"], {"synthloom.graph.runnable", "synthloom.graph.load"}),
    (["show", "quickstart", "--format", "svg"], {"synthloom.graph.runnable", "synthloom.inspect.diagram"}),
])
def test_quick_commands_do_not_import_the_engine(args: list[str], needs: set[str]) -> None:
    done = cli(*args, importtime=True)
    assert done.returncode == 0, done.stderr
    modules = imported(done)
    assert needs <= modules
    assert not HEAVY & modules, sorted(HEAVY & modules)
    if args == ["list"]:
        assert not {"synthloom.api", "synthloom.graph.runnable", "networkx", "jinja2"} & modules


def test_the_package_root_imports_its_names_on_first_use() -> None:
    code = ("import sys, synthloom; before = set(sys.modules); from synthloom import Node, node, load, preview, "
            "build_report; import synthloom.inspect.preview; print(callable(synthloom.preview), "
            "'synthloom.engine.runner' in before, 'synthloom.inspect.report' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.split() == ["True", "False", "True"], done.stderr

"""The package as a user installs it: a wheel built from this tree, installed (not editable) into a fresh
virtual environment, runs a shipped workflow against the fixture server and reports on it from there. This
catches what the editable install hides: a sub-package missing from pyproject's list, page templates or
graph data not shipped, code that reads files beside the source tree."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.fixture_server import FakeOpenAI
from tests.test_workflow_quickstart import QUESTIONS, script

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"synthloom": "framework", "synthloom_nodes": "nodes", "synthloom_graphs": "graphs",
                "synthloom_configs": "configs"}


def folder_packages() -> set[str]:
    """Every package the folders hold (a folder with an __init__.py), by its installed name."""
    found = set()
    for name, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    return found


def test_pyproject_lists_every_package() -> None:
    """pyproject lists the packages by hand (no discovery guessing at data folders): the list is complete."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == folder_packages()


@pytest.mark.slow
def test_the_wheel_runs_a_workflow_and_a_report(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    said = built.stdout + built.stderr
    assert "would be ignored" not in said and "ambiguous" not in said.lower(), said[-3000:]
    [wheel] = (tmp_path / "dist").glob("synthloom-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    studio_data = [path.relative_to(ROOT / "framework").as_posix() for folder in ("templates", "static")
                   for path in (ROOT / "framework" / "studio" / folder).iterdir()]
    assert studio_data and {f"synthloom/{name}" for name in studio_data} <= shipped  # the studio's pages

    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "work"  # a cwd outside the source tree, and no PYTHONPATH: only the venv's copy is found
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import synthloom, synthloom_graphs; "
                            "print(synthloom.__file__); print(synthloom_graphs.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(tmp_path / "venv"), where.stdout

    (work / "topics.jsonl").write_text("".join(json.dumps({"id": t, "topic": t}) + "\n" for t in QUESTIONS))
    server = FakeOpenAI(model="*", script=script(), cut_off=[r"^Question: How do tides work\?"])
    server.start()
    try:
        synthloom = str(tmp_path / "venv" / "bin" / "synthloom")
        run = subprocess.run([synthloom, "run", "quickstart", "--endpoint", server.url, "-o", "out", "--quiet",
                              "--no-cache", "--set", f"seed.source.path={work / 'topics.jsonl'}"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ids = {json.loads(line)["metadata"]["id"] for line in (work / "out" / "sft.jsonl").read_text().splitlines()}
    assert ids == {"ice", "rain", "tides", "stars", "sand"}  # as tests/test_workflow_quickstart.py finds
    assert (work / "out" / "README.md").read_text().startswith("---")  # the dataset card

    report = subprocess.run([synthloom, "report", "out"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (work / "out" / "report.html").read_text()
    assert "<svg" in page and "quickstart" in page  # the packaged templates, and the graph drawn

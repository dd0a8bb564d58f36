"""Broken graphs never give a traceback: property-based mutations of every shipped graph, and a corpus of
mutations that once did (tests/fuzz_corpus/).

`synthloom validate` must exit 0 or 2, in a few seconds, and on exit 2 print exactly one line on stderr that
names where the mistake is: `file:line` (the graph's, a profile's or a seed file's), or the key of a `--set`.
The CLI runs in-process (typer's CliRunner) to keep this under a minute; a few corpus files also go through
a real subprocess."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthloom.cli import app
from typer.testing import CliRunner

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"
SHIPPED = sorted(GRAPHS.glob("*.yaml"))
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
SECONDS = 10.0
LOCATED = re.compile(r"error: (?:[^\s:][^:]*:\d+: |--set [^\s=]+: )")
"""A user mistake names its file and line, or the `--set` key it comes from."""


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutated `seed.source.path` may look like a hub id; offline it is refused at once."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def check_validate(path: Path, *extra: str) -> int:
    """Run `synthloom validate` in-process and assert the CLI's promise; returns the exit code."""
    started = time.monotonic()
    result = CliRunner().invoke(app, ["validate", str(path), *extra])
    elapsed = time.monotonic() - started
    shown = path.read_bytes()[:600]
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception} for {shown!r}"
    assert result.exit_code in (0, 2), (result.exit_code, result.output, shown)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and LOCATED.match(lines[0]), (result.stderr, shown)
    assert elapsed < SECONDS, (elapsed, shown)
    return result.exit_code


# -- mutations of parsed graphs -------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**40, max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(lambda text: text + "\n{{ x }}\n"),
    st.sampled_from(["{{ topci }}", "{% for %}", "{{ 'a' * 10**9 }}", "os:system", "this:s", ".rel:x",
                     "synthloom_graphs.nope:x", "review.score <", "__import__('os')", "[0, 2000000000]",
                     "/dev/zero", "..", "data", "llm", "critic", "python", "hf", "-1", "1e999"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _paths(value, (*prefix, index))
    return found


def _parent(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    return tree


@st.composite
def mutated_tree(draw: st.DrawFn, original: dict[str, Any]) -> Any:
    tree = yaml.safe_load(yaml.safe_dump(original))
    for _ in range(draw(st.integers(1, 3))):
        paths = [path for path in _paths(tree) if path]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(tree, path)
        action = draw(st.sampled_from(["delete", "retype", "nest", "rename"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "retype":
            parent[path[-1]] = draw(VALUES)
        elif action == "nest":
            value = parent[path[-1]]
            for _ in range(draw(st.integers(1, 80))):
                value = draw(st.sampled_from([[value], {"k": value}]))
            parent[path[-1]] = value
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = parent.pop(path[-1])
    return tree


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> bytes:
    """Line-level damage YAML dumping cannot make: duplicate keys, aliases, garbage, truncation."""
    lines = text.splitlines()
    action = draw(st.sampled_from(["duplicate", "alias", "garbage", "truncate", "indent", "bomb"]))
    at = draw(st.integers(0, max(len(lines) - 1, 0)))
    if action == "duplicate":
        lines.insert(at, lines[at])
    elif action == "alias":
        lines.insert(0, "x-anchor: &anchor {type: llm, prompt: '{{ x }}', output: y}")
        lines[at] = lines[at] + " *anchor" if lines[at].rstrip().endswith(":") else lines[at]
    elif action == "garbage":
        data = "\n".join(lines).encode()
        cut = draw(st.integers(0, len(data)))
        return data[:cut] + draw(st.binary(min_size=1, max_size=30)) + data[cut:]
    elif action == "truncate":
        lines = lines[:at]
    elif action == "indent":
        lines[at] = " " * draw(st.integers(1, 5)) + lines[at]
    else:
        bomb = ['x-a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        for previous, name in zip("abcdefg", "bcdefgh", strict=True):
            bomb.append(f"x-{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        lines = bomb + lines
    return "\n".join(lines).encode()


def _workspace(tmp_path: Path) -> Path:
    """A folder where mutated graphs find the shipped seed data under the same relative paths."""
    folder = tmp_path / "graphs"
    if not folder.exists():
        folder.mkdir()
        (folder / "data").symlink_to(GRAPHS / "data")
    return folder


@pytest.mark.parametrize("graph", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_shipped_graphs_validate(graph: Path) -> None:
    assert check_validate(graph) == 0


@pytest.mark.parametrize("graph", SHIPPED, ids=[path.stem for path in SHIPPED])
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_graphs_never_give_a_traceback(graph: Path, tmp_path: Path, data: st.DataObject) -> None:
    folder = _workspace(tmp_path)
    original = yaml.safe_load(graph.read_text(encoding="utf-8"))
    if data.draw(st.booleans()):
        body = yaml.safe_dump(data.draw(mutated_tree(original)), allow_unicode=True).encode()
    else:
        body = data.draw(mutated_text(graph.read_text(encoding="utf-8")))
    path = folder / "mutant.yaml"
    path.write_bytes(body)
    extra = data.draw(st.sampled_from([
        [], ["--endpoint", "http://127.0.0.1:9/v1"], ["--set", "models.default.params.temperature=0.1"],
        ["--set", "nodes.x.y=1"], ["--set", "run.max_in_flight=[1"], ["--set", "seed.limit=-1"]]))
    check_validate(path, *extra)


# -- the corpus of mutations that once gave a traceback or hung -----------------------------------------

CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))


@pytest.mark.parametrize("case", CORPUS_FILES, ids=[path.stem for path in CORPUS_FILES])
def test_corpus_cases_fail_in_one_line(case: Path) -> None:
    assert check_validate(case) == (0 if case.stem.startswith("ok_") else 2)


@pytest.mark.parametrize("args", [["--set", "models.defualt.params.temperature=0.1"],
                                  ["--set", "models.default.params.max_tokns=abc"],
                                  ["--set", "nodes.nope.output=x"]])
def test_misspelt_set_keys_are_refused_naming_them(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["validate", "quickstart", *args])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert args[1].partition("=")[0] in result.stderr


@pytest.mark.parametrize("name", ["billion_laughs", "non_utf8", "deep_nesting", "function_os_system"])
def test_corpus_cases_through_the_real_cli(name: str) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "SYNTHLOOM_ALLOW_CODE"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(CORPUS / f"{name}.yaml")],
                          capture_output=True, text=True, timeout=60, env={**environment, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert time.monotonic() - started < 30


# -- every user mistake names its file and line -----------------------------------------------------------

def test_a_mistake_on_line_100_keeps_its_line_number(tmp_path: Path) -> None:
    """The terminal library read ':100:' in 'graph.yaml:100: ...' as an emoji code and printed an emoji."""
    graph = tmp_path / "graph.yaml"
    graph.write_text("# note\n" * 99 + "nme: typo\n")
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(graph)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and f"{graph}:100: " in done.stderr, done.stderr


def test_mistakes_found_when_the_run_starts_name_file_and_line(tmp_path: Path) -> None:
    """A model's unset API key variable is found by `run` and `preview`, not `validate`: it names its line too."""
    graph = tmp_path / "graph.yaml"
    graph.write_text(yaml.safe_dump({
        "name": "k", "models": {"w": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                      "api_key_env": "FUZZ_TEST_UNSET_KEY"}},
        "seed": {"source": {"type": "none", "rows": 1}},
        "nodes": {"a": {"type": "llm", "model": "w", "output": "x", "messages": [{"role": "user", "content": "hi"}]}},
        "outputs": [{"name": "raw", "format": "raw"}]}, sort_keys=False))
    line = next(number for number, text in enumerate(graph.read_text().splitlines(), 1) if "api_key_env" in text)
    environment = {key: value for key, value in os.environ.items() if key != "FUZZ_TEST_UNSET_KEY"}
    environment["SYNTHLOOM_KEY_HOSTS"] = "127.0.0.1"  # the user chose this host: the key's absence is the mistake
    for command in (["run", str(graph), "-o", str(tmp_path / "out"), "-q"], ["preview", str(graph)]):
        done = subprocess.run([sys.executable, "-m", "synthloom.cli", *command], capture_output=True, text=True,
                              timeout=60, env=environment)
        assert done.returncode == 2 and LOCATED.match(done.stderr), done.stderr
        assert f"{graph}:{line}: models.w.api_key_env: " in done.stderr, done.stderr

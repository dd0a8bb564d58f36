"""What Python a graph file may run: node types, modules in its own folder, and modules the user allows.

Everything else (the standard library, other installed packages) is refused before it is imported, with
exit 2 and one line naming the key and the rule."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import synthloom
import yaml
from synthloom.errors import ConfigError

SAMPLED = {"name": "t", "seed": {"source": {"type": "none", "rows": 1}}}


def cli(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) \
        -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "SYNTHLOOM_ALLOW_CODE"}
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env={**environment, **(env or {})})


def write(folder: Path, nodes: dict[str, object], **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "graph.yaml"
    path.write_text(yaml.safe_dump({**SAMPLED, "nodes": nodes, **extra}, sort_keys=False))
    return path


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


@pytest.mark.parametrize("target,what", [("os:system", "the standard library"),
                                         ("subprocess:getoutput", "the standard library"),
                                         ("yaml:dump", "an installed module")])
def test_a_graph_cannot_name_the_standard_library_or_installed_packages(tmp_path: Path, target: str,
                                                                         what: str) -> None:
    path = write(tmp_path, {"a": {"type": "python", "function": target, "output": "x"}})
    assert_refused(cli("validate", path), "graph.yaml:", "nodes.a.function", what, "--allow-code")
    assert_refused(cli("run", path, "-o", tmp_path / "out", "-q"), "nodes.a.function")
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_validate_imports_nothing_it_refuses(tmp_path: Path) -> None:
    """`type: "this:s"` used to import `this` (printing the Zen of Python) at validate time."""
    path = write(tmp_path, {"a": {"type": "this:s"}})
    done = cli("validate", path)
    assert_refused(done, "nodes.a.type", "the standard library")
    assert "Beautiful is better" not in done.stdout + done.stderr


def _module_with_side_effect(folder: Path, name: str, marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        from synthloom import node
        Path({str(marker)!r}).write_text("imported")

        @node(writes=["words"])
        def word_count(topic: str) -> dict:
            return {{"words": len(topic.split())}}
    """))


def test_a_module_elsewhere_is_refused_unless_the_user_allows_it(tmp_path: Path) -> None:
    marker = tmp_path / "imported.txt"
    _module_with_side_effect(tmp_path / "lib", "elsewhere_nodes", marker)
    path = write(tmp_path / "graphs", {"a": {"type": "elsewhere_nodes:word_count"}},
                 seed={"source": {"type": "jsonl", "path": "seeds.jsonl"}}, run={"allow_code": ["elsewhere_nodes"]})
    (tmp_path / "graphs" / "seeds.jsonl").write_text('{"topic": "tides and moons"}\n')
    on_path = {"PYTHONPATH": str(tmp_path / "lib")}
    assert_refused(cli("validate", path, env=on_path), "nodes.a.type", "an installed module",
                   "run.allow_code asks for it, which counts only with --trust-graph")
    assert not marker.exists()
    allowed = cli("validate", path, "--allow-code", "elsewhere_nodes", env=on_path)
    assert allowed.returncode == 0, allowed.stderr
    assert "nodes.a: elsewhere_nodes:word_count <- allowed (elsewhere_nodes)" in allowed.stdout
    assert marker.exists()
    marker.unlink()
    trusted = cli("validate", path, "--trust-graph", env=on_path)
    assert trusted.returncode == 0, trusted.stderr


def test_the_python_api_takes_allow_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTHLOOM_ALLOW_CODE")
    path = write(tmp_path / "g", {"a": {"type": "python", "function": "json:dumps", "output": "x"}},
                 seed={"source": {"type": "jsonl", "path": "seeds.jsonl"}})
    (tmp_path / "g" / "seeds.jsonl").write_text('{"obj": [1]}\n')
    with pytest.raises(ConfigError, match=r"nodes\.a\.function: graph files may not run 'json'"):
        synthloom.load(path)
    graph = synthloom.load(path, allow_code=["json"])
    assert [(use.where, use.target) for use in graph.code.uses] == [("nodes.a", "json:dumps")]


def test_the_readme_plugin_example_runs_without_pythonpath(tmp_path: Path) -> None:
    """my_nodes.py beside the graph file is found, from any working directory."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_nodes.py").write_text(textwrap.dedent('''
        from synthloom import Drop, node

        @node(writes=["words"])
        def word_count(answer: str, *, min_words: int = 5) -> dict:
            """Count the answer's words; drop answers that are too short."""
            words = len(answer.split())
            if words < min_words:
                return Drop("too short")
            return {"words": words}
    '''))
    (folder / "seeds.jsonl").write_text('{"answer": "one two three four five six"}\n{"answer": "short"}\n')
    path = write(folder, {"count": {"type": "my_nodes:word_count", "min_words": 3}},
                 seed={"source": {"type": "jsonl", "path": "seeds.jsonl"}})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    checked = cli("validate", path, cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert "nodes.count: my_nodes:word_count <- the graph's folder" in checked.stdout
    done = cli("run", path, "-o", tmp_path / "out", "-q", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [record["words"] for record in records] == [6]


def test_a_folder_module_cannot_shadow_an_installed_one(tmp_path: Path) -> None:
    (tmp_path / "yaml.py").write_text("raise SystemExit('shadowed')\n")
    path = write(tmp_path, {"a": {"type": "python", "function": "yaml:dump", "output": "x"}})
    assert_refused(cli("validate", path), "nodes.a.function")


@pytest.mark.parametrize("target", [".my_nodes:f", "..x:f", "a b:c", "my-nodes:f"])
def test_relative_or_malformed_module_names_are_refused(tmp_path: Path, target: str) -> None:
    path = write(tmp_path, {"a": {"type": target}})
    assert_refused(cli("validate", path), "nodes.a.type")


def test_validate_lists_the_code_a_shipped_workflow_runs() -> None:
    done = cli("validate", "self_instruct")
    assert done.returncode == 0, done.stderr
    assert "synthloom_graphs.self_instruct:tidy_instruction <- part of synthloom" in done.stdout


def test_agent_tools_and_output_schema_models_follow_the_same_rule(tmp_path: Path) -> None:
    agent = write(tmp_path / "a", {"a": {"type": "agent", "tools": ["shutil:rmtree"], "input": "x"}})
    assert_refused(cli("validate", agent), "nodes.a.tools.0", "the standard library")
    schema = write(tmp_path / "b", {"a": {"type": "llm", "prompt": "x", "output_schema": "pydantic:BaseModel"}})
    assert_refused(cli("validate", schema), "nodes.a", "graph files may not run 'pydantic'")
    graph = write(tmp_path / "c", {"a": {"type": "langgraph", "graph": "os:system", "inputs": {}, "outputs": {}}})
    assert_refused(cli("validate", graph), "nodes.a.graph", "the standard library")


@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs", "..", "a\\b"])
def test_a_graph_name_cannot_lead_the_default_output_elsewhere(tmp_path: Path, name: str) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump({"name": name, "seed": {"source": {"type": "none", "rows": 1}},
                                    "nodes": {"a": {"type": "filter", "when": "True", "reason": "r"}}}))
    assert_refused(cli("run", path, "-q", cwd=tmp_path), "graph.yaml:", "name: a graph name is a plain name")
    assert not (tmp_path.parent / "escape").exists()


def test_a_subgraph_file_follows_the_rules_of_the_graph_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({
        "name": "child", "nodes": {"shell": {"type": "python", "function": "os:system", "output": "status"}}}))
    (tmp_path / "seeds.jsonl").write_text('{"command": "touch pwned"}\n')
    path = write(tmp_path, {"sub": {"type": "subgraph", "graph": "child.yaml", "inputs": {"command": "command"},
                                    "outputs": {"status": "status"}}},
                 seed={"source": {"type": "jsonl", "path": "seeds.jsonl"}})
    assert_refused(cli("validate", path), "child.yaml:", "in subgraph 'sub'", "graph files may not run 'os'")
    assert_refused(cli("run", path, "-o", tmp_path / "out", "-q", cwd=tmp_path), "child.yaml",
                   "graph files may not run 'os'")
    assert not (tmp_path / "pwned").exists()


def test_validate_names_code_inside_a_subgraph_by_its_full_path(tmp_path: Path) -> None:
    """The code a subgraph's node names is listed as `nodes.sub.shell`, not as the child's own `nodes.shell`
    (which in the parent names nothing, or another node), however deep the subgraphs nest."""
    (tmp_path / "helpers.py").write_text("def status(state):\n    return {'status': 0}\n")
    shell = {"shell": {"type": "python", "function": "helpers:status", "output": "status"}}
    (tmp_path / "inner.yaml").write_text(yaml.safe_dump({"name": "inner", "nodes": shell}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"name": "child", "nodes": {
        **shell, "inner": {"type": "subgraph", "graph": "inner.yaml", "outputs": {"deep": "status"}}}}))
    path = write(tmp_path, {"sub": {"type": "subgraph", "graph": "child.yaml", "outputs": {"status": "status"}}})
    done = cli("validate", path)
    assert done.returncode == 0, done.stderr
    listed = [line.strip().split(" <- ")[0] for line in done.stdout.splitlines() if line.startswith("  nodes.")]
    assert listed == ["nodes.sub: child.yaml", "nodes.sub.inner: inner.yaml", "nodes.sub.inner.shell: helpers:status",
                      "nodes.sub.shell: helpers:status"], done.stdout

"""Node types come from entry points (built-ins too) or `package.module:Name`; a custom node is ~10 lines."""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import synthloom
from synthloom.errors import ConfigError
from synthloom.graph.registry import node_type_names, resolve_node_type

from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph


def test_built_ins_register_through_entry_points() -> None:
    assert {"llm", "critic"} <= set(node_type_names())
    assert resolve_node_type("llm").__module__ == "synthloom_nodes.llm"


def test_function_node_params_and_reads() -> None:
    shouted = resolve_node_type("tests.plugins_for_tests:shouted")
    assert set(shouted.Params.model_fields) == {"suffix", "output"}
    instance = shouted("s", shouted.Params(suffix="?"))
    assert instance.reads() == {"question"} and instance.writes() == {"shout"}


def test_bad_type_paths_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="may not run 'no_such_module' .no module of that name is installed"):
        resolve_node_type("no_such_module:thing")
    with pytest.raises(ConfigError, match="has no 'nothing'"):
        resolve_node_type("tests.plugins_for_tests:nothing")
    with pytest.raises(ConfigError, match="is 'collections.abc' code reached through 'tests.plugins_for_tests'"):
        resolve_node_type("tests.plugins_for_tests:Mapping")  # imported there, not defined there
    with pytest.raises(ConfigError, match="is not a node type"):
        resolve_node_type("synthloom_nodes.llm:LLMParams")


def test_custom_nodes_run_in_a_graph_with_output_key(fake_llm: Callable[..., FakeOpenAI],
                                                     write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = chain_graph(server)
    spec["nodes"]["count"] = {"type": "tests.plugins_for_tests:word_count"}
    spec["nodes"]["shout"] = {"type": "tests.plugins_for_tests:shouted", "output": "loud"}
    spec["edges"] += [["answer", "count"], ["count", "shout"]]
    result = synthloom.run(write_graph(spec, [{"topic": "tides"}]), tmp_path / "out")
    (record,) = list(result.records("raw"))
    assert record["words"] == 7 and record["loud"] == {"shout": "REPLY TO: ASK ABOUT TIDES!"}


def test_nodes_command_lists_parameters() -> None:
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "nodes"], capture_output=True, text=True,
                          env={"COLUMNS": "200", **__import__("os").environ})
    assert done.returncode == 0
    assert "llm" in done.stdout and "output_schema" in done.stdout and "critic" in done.stdout


ROOT = Path(__file__).resolve().parents[1]


def readme_node_examples() -> list[str]:
    """The python blocks of the README's "Writing a node" section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Writing a node", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_node_examples_type_check_strictly(tmp_path: Path) -> None:
    """The README promises both examples pass `mypy --strict`, against synthloom laid out as installed; a copy
    reading a parameter its Params lacks shows the check can fail."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    function_example, class_example = readme_node_examples()
    (tmp_path / "my_nodes.py").write_text(function_example)
    (tmp_path / "shout.py").write_text(class_example)
    (tmp_path / "shout_typo.py").write_text(class_example.replace("return {self.params.field}\n\n    def writes",
                                                                  "return {self.params.feild}\n\n    def writes"))
    stage = tmp_path / "installed"
    stage.mkdir()
    (stage / "synthloom").symlink_to(ROOT / "framework")  # what mypy cannot learn from the editable finder
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                           "--cache-dir", str(tmp_path / "mypy_cache"), "my_nodes.py", "shout.py", "shout_typo.py"],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(stage)})
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith('shout_typo.py:15: error: "ShoutParams" has no attribute '
                                                     '"feild"'), done.stdout + done.stderr

    sys.path.insert(0, str(tmp_path))
    try:
        my_nodes, shout = importlib.import_module("my_nodes"), importlib.import_module("shout")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_nodes", None)
        sys.modules.pop("shout", None)
    assert my_nodes.word_count("one two", min_words=3) == synthloom.Drop("too short")
    assert my_nodes.word_count("a b c d e") == {"words": 5}
    assert shout.Shout.Params is shout.ShoutParams  # taken from Node[ShoutParams]
    instance = shout.Shout("s", shout.ShoutParams(field="text"))
    assert instance.reads() == instance.writes() == {"text"}


def test_params_come_from_the_generic_base_and_must_agree() -> None:
    class LoudParams(synthloom.NodeParams):
        field: str

    class Loud(synthloom.Node[LoudParams]):
        pass

    class Louder(Loud):  # inherits Loud's Params
        pass

    assert Loud.Params is LoudParams and Louder.Params is LoudParams
    with pytest.raises(TypeError, match=r"Params \(NodeParams\) is not the LoudParams its base Node\[LoudParams\]"):
        class Wrong(synthloom.Node[LoudParams]):
            Params = synthloom.NodeParams


def test_a_function_node_stays_the_function_and_its_node_type_pickles() -> None:
    from tests.plugins_for_tests import shouted, word_count

    assert word_count("three short words") == {"words": 3}
    assert resolve_node_type("tests.plugins_for_tests:word_count") is word_count.node_type
    instance = shouted.node_type("s", shouted.node_type.Params(suffix="?"))
    copy = pickle.loads(pickle.dumps(instance))  # a Graph may be shipped to another process
    assert type(copy) is shouted.node_type and copy.params.suffix == "?"

"""Node types come from entry points (built-ins too) or `package.module:Name`; a custom node is ~10 lines."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import synthloom
from synthloom.errors import ConfigError
from synthloom.registry import node_type_names, resolve_node_type

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
    with pytest.raises(ConfigError, match="is not a node type"):
        resolve_node_type("tests.plugins_for_tests:Mapping")


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

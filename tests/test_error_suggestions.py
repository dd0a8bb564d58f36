"""Errors that suggest the fix: the closest name (difflib) for a misspelt node type, key, parameter, node,
model or module attribute, the valid keys where a key is unknown, the writer blamed for a misspelt
`output:`, and a run-time check that an `@node` returns only the keys its `writes=` declares."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import synthloom
from synthloom import ConfigError

from tests.test_validation import BASE, graph_file


def refusal(tmp_path: Path, text: str) -> ConfigError:
    path = graph_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        synthloom.load(path)
    return caught.value


@pytest.mark.parametrize("old,new,key,message", [
    ("type: llm\n    model: w\n    messages: [{role: user, content: \"About",
     "type: lmm\n    model: w\n    messages: [{role: user, content: \"About", "nodes.question.type",
     "unknown node type 'lmm'; did you mean 'llm'? (known: agent, "),
    ("edges:", "edgse:", "edgse", "unknown key 'edgse'; did you mean 'edges'? (valid keys here: name, description, "
     "language, seed, models, nodes, edges, tools, outputs, run)"),
    ("model: m}", "model: m, bakend: openai}", "models.w.bakend", "unknown key 'bakend'; did you mean 'backend'? "
     "(valid keys here: profile, backend, base_url, model,"),
    ("[{role: user, content: \"{{ question }}\"}]", "[{rol: user, content: \"{{ question }}\"}]",
     "nodes.answer.messages.0.rol", "unknown parameter 'rol' for a llm node; did you mean 'role'? (valid "
     "parameters here: role, content)"),
    ("    output: answer", "    output: answer\n    parms: {}", "nodes.answer.parms",
     "unknown parameter 'parms' for a llm node; did you mean 'params'? (valid parameters here: model, messages,"),
    ("- [question, answer]", "- [question, answr]", "edges.0", "edge to unknown node 'answr'; did you mean "
     "'answer'? (nodes: question, answer)"),
    ("    model: w\n    messages: [{role: user, content: \"{{", "    model: ww\n    messages: [{role: user, "
     "content: \"{{", "nodes.answer.model", "unknown model 'ww'; did you mean 'w'?"),
    ("About {{ topic }}", "About {{ topik }}", "nodes.question.messages.0.content",
     "reads topik, which no upstream node writes and the seed does not have (seed columns: topic); did you mean "
     "'topic'?"),
    ("{{ question }}", "{{ qestion }}", "nodes.answer.messages.0.content",  # the reader's spelling is the odd one
     "node 'answer' reads qestion, which no upstream node writes and the seed does not have (seed columns: topic); "
     "did you mean 'question'?"),
])
def test_a_misspelling_gets_the_closest_name(tmp_path: Path, old: str, new: str, key: str, message: str) -> None:
    error = refusal(tmp_path, BASE.replace(old, new, 1))
    assert error.key == key
    assert message in error.message, error.message


def test_nothing_close_suggests_nothing(tmp_path: Path) -> None:
    error = refusal(tmp_path, BASE.replace("type: llm", "type: zzzzzz", 1))
    assert "did you mean" not in error.message and "unknown node type 'zzzzzz' (known: agent" in error.message


def test_a_missing_module_attribute_suggests_the_closest(tmp_path: Path) -> None:
    error = refusal(tmp_path, BASE.replace("type: llm", "type: tests.plugins_for_tests:word_cont", 1))
    assert error.message == "module 'tests.plugins_for_tests' has no 'word_cont'; did you mean 'word_count'?"


def test_a_misspelt_output_blames_its_writer(tmp_path: Path) -> None:
    """`output: qestion` makes `answer` read a key nobody writes; the mistake is on the writer's line."""
    error = refusal(tmp_path, BASE.replace("output: question", "output: qestion", 1))
    assert error.key == "nodes.question.output"
    assert error.where == f"{tmp_path / 'g.yaml'}:10"
    assert error.message == ("node 'question' writes 'qestion', which nothing reads, while node 'answer' reads "
                             "'question', which nothing writes; did you mean 'question'?")


def test_a_misspelt_output_read_by_an_output_blames_its_writer(tmp_path: Path) -> None:
    text = BASE.replace("output: answer", "output: answr", 1) + \
        "outputs:\n  - {name: raw, format: raw, fields: [question, answer]}\n"
    error = refusal(tmp_path, text)
    assert error.key == "nodes.answer.output"
    assert "node 'answer' writes 'answr', which nothing reads, while output 'raw' reads 'answer'" in error.message


def test_a_reader_whose_key_is_in_its_code_is_named_without_a_trailing_dot(tmp_path: Path) -> None:
    """word_count reads `answer` through its signature: no line of its YAML mentions the key."""
    text = BASE.replace("type: llm\n    model: w\n    messages: [{role: user, content: \"{{ question }}\"}]\n"
                        "    output: answer", "type: tests.plugins_for_tests:word_count", 1)
    error = refusal(tmp_path, text)
    assert error.key == "nodes.answer"
    assert "node 'answer' reads answer, which no upstream node writes" in error.message
    assert str(error).startswith(f"{tmp_path / 'g.yaml'}:11: nodes.answer: ")


def test_a_node_returning_an_undeclared_key_fails_naming_node_and_key(tmp_path: Path) -> None:
    """`@node(writes=["words"])` returning {"wordz": 3}: the record fails at that node, not later at an output."""
    (tmp_path / "counting_nodes.py").write_text(textwrap.dedent('''
        from synthloom import node

        @node(writes=["words"])
        def count(answer: str) -> dict:
            return {"wordz": len(answer.split())}
    '''))
    (tmp_path / "seeds.jsonl").write_text('{"answer": "three small words"}\n')
    (tmp_path / "g.yaml").write_text(textwrap.dedent("""
        name: t
        seed: {source: {type: jsonl, path: seeds.jsonl}}
        nodes:
          count: {type: "counting_nodes:count"}
        outputs:
          - {name: raw, format: raw, fields: [words]}
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", "g.yaml", "-o", "out", "-q"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stderr
    failed = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and failed[0]["node"] == "count"
    assert failed[0]["message"] == ("node 'count' returned 'wordz', which its writes (words) do not declare; "
                                    "declare it in @node(writes=[...]) or return only declared keys")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["written"] == 0


def test_a_plugin_parameter_error_shows_the_field_description(tmp_path: Path) -> None:
    """The description a node type's author gives with `Field(description=...)` is shown with its error."""
    (tmp_path / "described_nodes.py").write_text(textwrap.dedent('''
        from pydantic import Field
        from synthloom import Node, NodeParams

        class TrimParams(NodeParams):
            limit: int = Field(description="the most words a text keeps")
            field: str = "answer"
            mode: str

        class Trim(Node[TrimParams]):
            """Cut a text to `limit` words."""
    '''))
    text = BASE.replace("type: llm\n    model: w\n    messages: [{role: user, content: \"{{ question }}\"}]\n"
                        "    output: answer", "type: described_nodes:Trim\n    mode: cut", 1)
    error = refusal(tmp_path, text)
    assert error.key == "nodes.answer.limit"
    assert error.message == "a described_nodes:Trim node needs 'limit' (limit: the most words a text keeps)"
    error = refusal(tmp_path, text.replace("mode: cut", "mode: cut\n    limit: many"))
    assert error.message.endswith("unable to parse string as an integer (limit: the most words a text keeps)")
    error = refusal(tmp_path, text.replace("    mode: cut", "    limit: 3"))
    assert error.message == "a described_nodes:Trim node needs 'mode'"  # no description given, none shown

"""Bad graphs are refused before any call, with one line naming the file, the line and the key."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import synthloom
from synthloom import ConfigError

SEEDS = '{"topic": "tides"}\n'


def graph_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "seeds.jsonl").write_text(SEEDS)
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


BASE = """
name: t
seed: {source: {type: jsonl, path: seeds.jsonl}}
models:
  w: {backend: openai, base_url: "http://127.0.0.1:9/v1", model: m}
nodes:
  question:
    type: llm
    model: w
    messages: [{role: user, content: "About {{ topic }}"}]
    output: question
  answer:
    type: llm
    model: w
    messages: [{role: user, content: "{{ question }}"}]
    output: answer
edges:
  - [question, answer]
"""


@pytest.mark.parametrize("old,new,line,key,words", [
    ("- [question, answer]", "- [question, answr]", 17, "edges.0", "unknown node 'answr'"),
    ("    model: w\n    messages: [{role: user, content: \"{{ question }}\"}]",
     "    model: x\n    messages: [{role: user, content: \"{{ question }}\"}]", 13, "nodes.answer.model",
     "unknown model 'x'"),
    ("{{ question }}", "{{ qestion }}", 14, "nodes.answer.messages.0.content", "reads qestion"),
    ("    output: answer", "    output: answer\n    temprature: 0.3", 16, "nodes.answer.temprature",
     "unknown parameter 'temprature'"),
    ("- [question, answer]", "- [question, answer]\n  - [answer, question]", 16, "edges", "no start node"),
    ("name: t", "name: t\nnmae: x", 2, "nmae", "unknown key 'nmae'"),
    ("type: llm\n    model: w\n    messages: [{role: user, content: \"About",
     "type: lm\n    model: w\n    messages: [{role: user, content: \"About", 7, "nodes.question.type",
     "unknown node type 'lm'"),
])
def test_each_mistake_names_file_line_and_key(tmp_path: Path, old: str, new: str, line: int, key: str,
                                             words: str) -> None:
    path = graph_file(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        synthloom.load(path)
    message = str(caught.value)
    assert f"{path}:{line}: {key}:" in message, message
    assert words in message
    assert "\n" not in message


def test_unbounded_loop_and_unreachable_node(tmp_path: Path) -> None:
    looped = BASE + "  - {from: answer, to: answer, when: \"len(answer) < 5\"}\n"
    with pytest.raises(ConfigError, match="loop answer -> answer has no max_visits"):
        synthloom.load(graph_file(tmp_path, looped))
    bounded = BASE + "  - {from: answer, to: answer, when: \"len(answer) < 5\", max_visits: 2}\n"
    assert synthloom.load(graph_file(tmp_path, bounded)).name == "t"
    orphan = BASE.replace("edges:\n", "  lonely: {type: llm, model: w, messages: [{role: user, content: hi}], "
                                      "output: x}\n  other: {type: llm, model: w, messages: [{role: user, "
                                      "content: hi}], output: y}\nedges:\n  - [other, lonely]\n"
                                      "  - {from: lonely, to: other, max_visits: 1}\n")
    with pytest.raises(ConfigError, match="'lonely' cannot be reached"):
        synthloom.load(graph_file(tmp_path, orphan))


def test_output_and_condition_keys_are_checked(tmp_path: Path) -> None:
    bad_output = BASE + "outputs:\n  - {name: sft, format: sft, messages: [{role: user, content: '{{ nope }}'}]}\n"
    with pytest.raises(ConfigError, match="output 'sft' reads nope"):
        synthloom.load(graph_file(tmp_path, bad_output))
    bad_when = BASE + "  - {from: answer, to: answer, when: \"score < 3\", max_visits: 1}\n"
    with pytest.raises(ConfigError, match="condition reads score"):
        synthloom.load(graph_file(tmp_path, bad_when))


def test_yaml_syntax_error_points_at_line(tmp_path: Path) -> None:
    path = graph_file(tmp_path, "name: t\nnodes:\n  a: {type: llm\n  b: 1\n")
    with pytest.raises(ConfigError, match=r"g.yaml:\d+: not valid YAML"):
        synthloom.load(path)


def test_missing_seed_file_and_sandboxed_template_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seed file .*missing.jsonl does not exist"):
        synthloom.load(graph_file(tmp_path, BASE.replace("seeds.jsonl", "missing.jsonl")))
    with pytest.raises(ConfigError, match="template syntax error"):
        synthloom.load(graph_file(tmp_path, BASE.replace("{{ question }}", "{{ question ")))


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = graph_file(tmp_path, BASE.replace("- [question, answer]", "- [question, answr]"))
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown node 'answr'" in lines[0] and f"{path}:17" in lines[0]
    ok = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(graph_file(tmp_path, BASE))],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ok: t" in ok.stdout


def test_set_and_endpoint_overrides(tmp_path: Path) -> None:
    path = graph_file(tmp_path, BASE)
    graph = synthloom.load(path, ["models.w.max_concurrency=3", "nodes.answer.messages.0.content=hi {{ topic }}"])
    assert graph.config.models["w"].max_concurrency == 3
    assert graph.nodes["answer"].reads() == {"topic"}
    pointed = synthloom.load(path, endpoint="http://10.0.0.1:8000/v1")
    assert pointed.config.models["w"].base_url == "http://10.0.0.1:8000/v1"
    with pytest.raises(ConfigError, match="dotted.key=value"):
        synthloom.load(path, ["models.w.max_concurrency"])
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        synthloom.load(path, ["models.w.max_concurrency=0"])


def test_show_prints_mermaid(tmp_path: Path) -> None:
    graph = synthloom.load(graph_file(tmp_path, BASE + "  - {from: answer, to: answer, when: \"len(answer) < 3\", "
                                                        "max_visits: 2}\n"))
    text = graph.mermaid()
    assert text.startswith("flowchart TD")
    assert "n_question --> n_answer" in text
    assert 'n_answer -- "len(answer) < 3, max 2" --> n_answer' in text


def test_x_keys_hold_yaml_anchors_and_comprehensions_validate(tmp_path: Path) -> None:
    text = """
x-prompt: &ask "About {{ topic }}"
name: t
seed: {source: {type: jsonl, path: seeds.jsonl}}
models:
  w: {backend: openai, base_url: "http://127.0.0.1:9/v1", model: m}
nodes:
  question: {type: llm, model: w, messages: [{role: user, content: *ask}], output: question}
  again: {type: llm, model: w, messages: [{role: user, content: "{{ question }}"}], output: question}
edges:
  - {from: question, to: again, when: "any(w in question.lower() for w in ['image', 'photo'])", max_visits: 1}
"""
    graph = synthloom.load(graph_file(tmp_path, text))
    assert graph.nodes["question"].reads() == {"topic"}
    bad = text.replace("for w in", "for w in unknown_list or")
    with pytest.raises(ConfigError, match="condition reads unknown_list"):
        synthloom.load(graph_file(tmp_path, bad))

"""One word per idea in the YAML: the new spellings, and the old ones still read for one release with a
one-line warning naming the file, the line and the new spelling."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import synthloom
from synthloom.config.loader import load_config

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines

GRAPH = """name: spellings
seed:
  source: {{type: jsonl, path: seeds.jsonl}}
  shuffle: true
  {shuffle_seed}: 3
models: {{w: {model}}}
nodes:
  answer: {{type: llm, model: w, output: answer, params: {{max_tokens: 20}},
           messages: [{{role: user, content: "{{{{ topic }}}}"}}]}}
  tag:
    type: python
    function: tests.test_nodes_python:tag_answer
    {args}: {{tag: ok}}
    writes: [tagged, tag_length]
edges: [[answer, tag]]
outputs:
  - name: sft
    format: sft
    {messages_from}: answer
  - name: dpo
    format: dpo
    {prompt_from}: topic
    {chosen_from}: tagged
    {rejected_from}: answer
"""
NEW = {key: key for key in ("shuffle_seed", "args", "messages_from", "prompt_from", "chosen_from", "rejected_from")}
OLD = {"shuffle_seed": "seed", "args": "params", "messages_from": "messages", "prompt_from": "prompt",
       "chosen_from": "chosen", "rejected_from": "rejected"}
OLD_KEYS = [  # (line, dotted key, new spelling) of each old key in GRAPH
    (5, "seed.seed", "shuffle_seed"), (13, "nodes.tag.params", "args"), (19, "outputs.0.messages", "messages_from"),
    (22, "outputs.1.prompt", "prompt_from"), (23, "outputs.1.chosen", "chosen_from"),
    (24, "outputs.1.rejected", "rejected_from")]
TOPICS = [{"id": str(index), "topic": topic} for index, topic in enumerate(["tides", "stars", "moss", "rain"])]


def write(folder: Path, server: FakeOpenAI, spelling: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seeds.jsonl").write_text("".join(json.dumps(row) + "\n" for row in TOPICS))
    path = folder / "graph.yaml"
    path.write_text(GRAPH.format(model=json.dumps(model_spec(server)), **spelling))
    return path


def test_old_spellings_warn_once_each_and_mean_the_same_graph(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = fake_llm()
    old, new = write(tmp_path / "old", server, OLD), write(tmp_path / "new", server, NEW)
    with caplog.at_level(logging.WARNING, logger="synthloom"):
        loaded_new = load_config(new)
        assert caplog.messages == []  # the new spelling is quiet, and llm `params:` is not an old spelling
        loaded_old = load_config(old)
    assert caplog.messages == [f"{old}:{line}: {key}: '{key.rsplit('.', 1)[1]}' is now spelt '{spelling}'; the old "
                               f"spelling is read until the next release" for line, key, spelling in OLD_KEYS]
    assert loaded_old.config == loaded_new.config and loaded_old.hash == loaded_new.hash
    assert loaded_new.config.seed.shuffle_seed == 3 and loaded_new.config.outputs[0].messages_from == "answer"

    old_run = synthloom.run(old, tmp_path / "old_out")
    new_run = synthloom.run(new, tmp_path / "new_out")
    for output in ("sft", "dpo"):
        records = lines(new_run.path(output))
        assert len(records) == len(TOPICS) and records == lines(old_run.path(output))
    assert {record["prompt"][0]["content"] for record in lines(new_run.path("dpo"))} == {"tides", "stars", "moss",
                                                                                         "rain"}
    assert all(record["chosen"][0]["content"].startswith("[ok] ") for record in lines(new_run.path("dpo")))


def test_the_cli_prints_each_warning_on_one_line(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    old = write(tmp_path, fake_llm(), OLD)
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(old)], capture_output=True,
                          text=True, env={**os.environ, "SYNTHLOOM_ALLOW_CODE": "tests"})
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "is now spelt" in line]
    assert [line.split(": ")[0] for line in warned] == [f"{old}:{line}" for line, _, _ in OLD_KEYS]
    assert all(f"'{spelling}'" in line for line, (_, _, spelling) in zip(warned, OLD_KEYS, strict=True))


@pytest.mark.parametrize("old,new,line", [("seed", "shuffle_seed", 5), ("params", "args", 13)])
def test_both_spellings_at_once_is_an_error(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path, old: str,
                                            new: str, line: int) -> None:
    path = write(tmp_path, fake_llm(), NEW)
    text = path.read_text().splitlines()
    indent = text[line - 1][:len(text[line - 1]) - len(text[line - 1].lstrip())]
    text.insert(line - 1, f"{indent}{old}: {'{tag: no}' if old == 'params' else 4}")
    path.write_text("\n".join(text) + "\n")
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "validate", str(path)], capture_output=True,
                          text=True, env={**os.environ, "SYNTHLOOM_ALLOW_CODE": "tests"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path}:{line}:" in done.stderr and f"give '{new}' only ('{old}' is its old spelling)" in done.stderr


def test_templates_and_a_state_key_for_one_part_is_an_error(fake_llm: Callable[..., FakeOpenAI],
                                                            tmp_path: Path) -> None:
    path = write(tmp_path, fake_llm(), NEW)
    path.write_text(path.read_text().replace("    messages_from: answer\n", "    messages_from: answer\n"
                                             "    messages: [{role: user, content: hi}]\n"))
    with pytest.raises(synthloom.ConfigError, match=r"graph.yaml:\d+: outputs.0: give messages \(templates\) or "
                                                    r"messages_from \(a state key\), not both"):
        synthloom.load(path)
    path.write_text(path.read_text().replace("    messages_from: answer\n", ""))
    synthloom.load(path)

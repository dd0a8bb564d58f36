"""Graph checks that used to let mistakes through: unknown writes, parallel writers of one key."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import synthloom
import yaml
from synthloom.errors import ConfigError

NODES = textwrap.dedent('''
    from typing import TypedDict

    from synthloom import node


    class Counted(TypedDict):
        words: int
        chars: int


    @node
    def count(topic: str) -> Counted:
        return {"words": len(topic.split()), "chars": len(topic)}


    @node
    def unknown(topic: str) -> dict:
        return {"other": topic}
''')


def write(tmp_path: Path, nodes: dict[str, object], edges: list[object], outputs: list[object] | None = None) -> Path:
    """The graph and its node module beside it; the module's name is the test's own (one process, many tests)."""
    module = f"holes_{tmp_path.name}"
    (tmp_path / f"{module}.py").write_text(NODES)
    nodes = {name: {**spec, "type": spec["type"].replace("hole_nodes", module)}  # type: ignore[index,dict-item]
             for name, spec in nodes.items()}
    (tmp_path / "seeds.jsonl").write_text('{"topic": "tides"}\n')
    spec: dict[str, object] = {"name": "t", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
                               "nodes": nodes, "edges": edges}
    if outputs is not None:
        spec["outputs"] = outputs
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def raw(template: str) -> list[object]:
    return [{"name": "sft", "format": "sft", "messages": [{"role": "user", "content": template}]}]


def test_writes_come_from_a_typed_dict_return_so_output_typos_are_caught(tmp_path: Path) -> None:
    nodes = {"count": {"type": "hole_nodes:count"}}
    assert synthloom.load(write(tmp_path, nodes, [], raw("{{ topic }} {{ words }} {{ chars }}"))).unchecked == []
    with pytest.raises(ConfigError, match=r"output 'sft' reads topci"):
        synthloom.load(write(tmp_path, nodes, [], raw("{{ topci }} {{ words }}")))


def test_unknown_writes_excuse_only_what_is_read_after_that_node(tmp_path: Path) -> None:
    nodes = {"first": {"type": "filter", "when": "len(topci) > 0", "reason": "x"},
             "mystery": {"type": "hole_nodes:unknown"}}
    with pytest.raises(ConfigError, match=r"nodes\.first\.when.*reads topci"):
        synthloom.load(write(tmp_path, nodes, [["first", "mystery"]]))
    after = {"mystery": {"type": "hole_nodes:unknown"},
             "then": {"type": "filter", "when": "len(other) > 0", "reason": "x"}}
    graph = synthloom.load(write(tmp_path, after, [["mystery", "then"]]))
    assert graph.unchecked == ["mystery"]


def test_parallel_branches_writing_one_key_are_refused(tmp_path: Path) -> None:
    nodes = {"start": {"type": "filter", "when": "True", "reason": "x"},
             "left": {"type": "hole_nodes:count"}, "right": {"type": "hole_nodes:count"}}
    with pytest.raises(ConfigError, match=r"graph\.yaml:\d+: nodes\.right: nodes 'left' and 'right' run side by "
                                          r"side and both write 'chars'"):
        synthloom.load(write(tmp_path, nodes, [["start", "left"], ["start", "right"]]))
    with pytest.raises(ConfigError, match="nodes 'left' and 'right' run side by side"):
        synthloom.load(write(tmp_path, {"left": nodes["left"], "right": nodes["right"]}, []))


def test_exclusive_or_ordered_writers_of_one_key_are_fine(tmp_path: Path) -> None:
    nodes = {"start": {"type": "filter", "when": "True", "reason": "x"},
             "left": {"type": "hole_nodes:count"}, "right": {"type": "hole_nodes:count"}}
    exclusive = [{"from": "start", "to": "left", "when": "len(topic) > 3"},
                 {"from": "start", "to": "right", "when": "len(topic) <= 3"}]
    assert synthloom.load(write(tmp_path, nodes, exclusive)).name == "t"
    assert synthloom.load(write(tmp_path, nodes, [["start", "left"], ["left", "right"]])).name == "t"


def test_a_local_model_file_that_does_not_exist_is_refused_before_the_run(tmp_path: Path) -> None:
    """It used to load, then fail every record at the first call; now `load`/`validate` names the key's line.
    Only for models a node uses, so a profile's unused local model with a missing file does not stop a run."""
    (tmp_path / "seeds.jsonl").write_text('{"topic": "tides"}\n')
    graph = {"name": "g", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
             "models": {"default": {"backend": "local", "path": str(tmp_path / "missing.gguf")},
                        "unused": {"backend": "local", "path": str(tmp_path / "also-missing.gguf")}},
             "nodes": {"a": {"type": "llm", "prompt": "{{ topic }}", "output": "a"}},
             "outputs": [{"name": "sft", "format": "sft",
                          "messages": [{"role": "user", "content": "{{ topic }}"},
                                       {"role": "assistant", "content": "{{ a }}"}]}]}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph, sort_keys=False))
    with pytest.raises(ConfigError, match="missing.gguf does not exist") as refused:
        synthloom.load(path)
    assert "also-missing" not in str(refused.value)
    line = 1 + path.read_text().splitlines().index(f"    path: {tmp_path / 'missing.gguf'}")
    assert refused.value.where == f"{path}:{line}"

"""Graphs from strangers, second pass (issue 18; issue 25 item 4): the reproductions, through the real CLI.

A graph file, alone or with files beside it, must not run code, send a key or write outside its run
directory unless the person running synthloom allowed it: on every command, and `validate` refuses what
`run` would (subgraphs followed) and lists what it lets in, without running graph code to do so.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
import synthloom_graphs
import yaml
from synthloom.errors import ConfigError, RecordError
from synthloom.graph.node import Node, NodeFunction
from synthloom.graph.registry import import_object, resolve_node_type
from synthloom.graph.runnable import code_references
from synthloom.sandbox.code_policy import TRUSTED_PACKAGES, CodePolicy

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI

SYNTHLOOM = Path(sys.executable).with_name("synthloom")
"""The installed command: its import path holds no working directory (unlike `python -m`)."""


def synthloom_cli(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) \
        -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("SYNTHLOOM_ALLOW_CODE", "SYNTHLOOM_KEY_HOSTS", "PYTHONPATH")}
    return subprocess.run([str(SYNTHLOOM), *map(str, args)], capture_output=True, text=True, timeout=180,
                          env={**environment, **(env or {})}, cwd=cwd)


def refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


def graph_file(folder: Path, nodes: dict[str, Any], **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"name": "g", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}}, "nodes": nodes, **extra}
    if not (folder / "seeds.jsonl").exists():
        (folder / "seeds.jsonl").write_text('{"id": "r1", "command": "touch pwned", "topic": "tides", '
                                            '"stream": "!!python/object/apply:os.system [touch pwned]", "pid": 1}\n')
    path = folder / "graph.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# -- 1. code without consent: a trusted module's imports are not a way in ------------------------------------

WALKS = {
    "python function through os": {"type": "python", "function": "synthloom_nodes.dedup.disk:os.system",
                                   "output": "status"},
    "python function through yaml": {"type": "python", "function": "synthloom_nodes.sampler:yaml.unsafe_load",
                                     "output": "status"},
    "node type": {"type": "synthloom_nodes.dedup.disk:os.system"},
    "node type, a name imported there": {"type": "synthloom_nodes.dedup.disk:Path"},
    "agent tools": {"type": "agent", "tools": ["synthloom_nodes.dedup.disk:shutil.rmtree"], "input": "x"},
    "langgraph graph": {"type": "langgraph", "graph": "synthloom_nodes.dedup.disk:os.system", "inputs": {},
                        "outputs": {"x": "x"}},
    "pairs verifier": {"type": "pairs", "prompt": "x", "candidates": "command",
                       "verifier": "synthloom_nodes.dedup.disk:os.system"},
    "output_schema model": {"type": "llm", "prompt": "x", "output_schema": "synthloom_nodes.sampler:BaseModel"},
    "a private name": {"type": "python", "function": "synthloom_nodes.dedup.disk:_alive", "output": "x"},
}


@pytest.mark.parametrize("spec", WALKS.values(), ids=list(WALKS))
def test_a_trusted_modules_imports_cannot_be_walked_to(tmp_path: Path, spec: dict[str, Any]) -> None:
    """`synthloom_nodes.dedup.disk:os.system` ran a shell, and validate said `<- part of synthloom`."""
    path = graph_file(tmp_path, {"a": spec})
    done = synthloom_cli("validate", path, cwd=tmp_path)
    refused(done, "graph.yaml:", "nodes.a")
    assert "part of synthloom" not in done.stdout


def test_os_system_through_a_trusted_module_runs_no_shell(tmp_path: Path) -> None:
    path = graph_file(tmp_path, {"a": WALKS["python function through os"]})
    refused(synthloom_cli("run", path, "-o", tmp_path / "out", "-q", cwd=tmp_path), "nodes.a.function",
            "goes on through 'os', which disk.py does not define as a class")
    assert not (tmp_path / "pwned").exists()


def test_validate_follows_subgraphs_and_refuses_what_they_name(tmp_path: Path) -> None:
    """Issue 25.4: validate said ok for a subgraph naming refused code; the refusal came only at run."""
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"name": "child", "nodes": {
        "shell": {"type": "python", "function": "synthloom_nodes.dedup.disk:os.system", "output": "status"}}}))
    path = graph_file(tmp_path, {"sub": {"type": "subgraph", "graph": "child.yaml",
                                         "inputs": {"command": "command"}, "outputs": {"status": "status"}}})
    refused(synthloom_cli("validate", path, cwd=tmp_path), "child.yaml:", "in subgraph 'sub'", "goes on through 'os'")
    refused(synthloom_cli("run", path, "-o", tmp_path / "out", "-q", cwd=tmp_path), "in subgraph 'sub'")
    assert not (tmp_path / "pwned").exists()


def test_validate_lists_what_a_subgraph_names(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"name": "child", "nodes": {
        "tidy": {"type": "python", "function": "synthloom_graphs.self_instruct:tidy_instruction",
                 "output": "tidied"}}}))
    path = graph_file(tmp_path, {"sub": {"type": "subgraph", "graph": "child.yaml",
                                         "inputs": {"draft": "topic"}, "outputs": {"tidied": "tidied"}}})
    done = synthloom_cli("validate", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "nodes.sub: child.yaml <- a subgraph file" in done.stdout
    assert "synthloom_graphs.self_instruct:tidy_instruction <- part of synthloom" in done.stdout


# -- 1b. installed code: a graph names only what is exported for graphs --------------------------------------

def attacking_sql(victim: Path) -> list[str]:
    return [f"ATTACH DATABASE '{victim / 'precious.sqlite'}' AS v", "DROP TABLE v.notes",
            f"ATTACH DATABASE '{victim / 'new-file-anywhere'}' AS w", "CREATE TABLE w.t(a)"]


def test_an_internal_class_of_synthloom_nodes_cannot_run_sql_from_a_seed(tmp_path: Path) -> None:
    """Review: `function: synthloom_nodes.dedup.disk:IndexFile` ran the seed's `schema` list as SQL, which
    attached and dropped a table of a database elsewhere and created files anywhere; validate said
    `<- part of synthloom`."""
    victim = tmp_path / "victim"
    victim.mkdir()
    with sqlite3.connect(victim / "precious.sqlite") as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    folder = tmp_path / "stranger"
    folder.mkdir()
    (folder / "seeds.jsonl").write_text(json.dumps({"id": "r1", "kind": "k", "settings": {},
                                                    "schema": attacking_sql(victim)}) + "\n")
    path = graph_file(folder, {"a": {"type": "python", "function": "synthloom_nodes.dedup.disk:IndexFile",
                                     "output": "idx"}})
    for command in (["validate", path], ["run", path, "-o", tmp_path / "out", "-q"]):
        done = synthloom_cli(*command, cwd=folder)
        refused(done, "graph.yaml:", "nodes.a.function", "is not exported for graphs", "@node functions",
                "__graph_api__")
        assert "part of synthloom" not in done.stdout
    with sqlite3.connect(victim / "precious.sqlite") as db:
        assert db.execute("SELECT text FROM notes").fetchall() == [("keep me",)]
    assert sorted(item.name for item in victim.iterdir()) == ["precious.sqlite"]


def test_a_helper_that_loops_a_count_from_the_seed_cannot_be_named(tmp_path: Path) -> None:
    """Review: `function: synthloom_graphs.sycophancy:addition_claims` with a seed `count` of 1e8 built
    lists until a MemoryError after 1.5 GB; it is a test fixture, not glue a graph names."""
    (tmp_path / "seeds.jsonl").write_text('{"id": "r1", "count": 100000000, "seed": 1}\n')
    path = graph_file(tmp_path, {"c": {"type": "python", "function": "synthloom_graphs.sycophancy:addition_claims",
                                       "output": "claims"}})
    for command in (["validate", path], ["run", path, "-o", tmp_path / "out", "-q"]):
        refused(synthloom_cli(*command, cwd=tmp_path), "nodes.c.function", "is not exported for graphs")
    assert not (tmp_path / "out" / "o.jsonl").exists()


EXPORTED_FOR_GRAPHS = {
    "synthloom_graphs.agentinstruct:read_document", "synthloom_graphs.agentinstruct:refined_question",
    "synthloom_graphs.dialogues:pick_subtopic", "synthloom_graphs.dialogues:seat_prompts",
    "synthloom_graphs.dialogues:tidy_dialogue", "synthloom_graphs.dpo_weak_strong:grade",
    "synthloom_graphs.dpo_weak_strong:check", "synthloom_graphs.evol_instruct:begin",
    "synthloom_graphs.evol_instruct:pick_operation", "synthloom_graphs.evol_instruct:eliminate",
    "synthloom_graphs.evol_instruct:accept", "synthloom_graphs.fables:fable_prompt",
    "synthloom_graphs.rag_synth:strip_preamble", "synthloom_graphs.self_instruct:tidy_instruction",
    "synthloom_graphs.self_instruct:tidy_input", "synthloom_graphs.sycophancy:build_claim_prompts",
    "synthloom_graphs.function_calling:check", "synthloom_graphs.function_calling:select",
    "synthloom_graphs.toolkit:calculate", "synthloom_graphs.toolkit:convert_units",
    "synthloom_graphs.toolkit:lookup_country"}
"""The @node functions the shipped workflows name, and the plain functions marked in `__graph_api__` (the
dpo_weak_strong `pairs` verifier, the toolkit's functions as python tools)."""


def installed_callables() -> list[str]:
    """`module:Name` for every public function and class defined in synthloom_nodes and synthloom_graphs."""
    found = []
    for package in TRUSTED_PACKAGES:
        root = importlib.import_module(package)
        names = [package, *(info.name for info in pkgutil.walk_packages(root.__path__, package + "."))]
        for module_name in names:
            module = importlib.import_module(module_name)
            for name, value in vars(module).items():
                if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == module_name:
                    found.append(f"{module_name}:{name}")
    return found


def resolves(reference: str, resolve: Callable[[str], Any]) -> bool:
    with CodePolicy().active():
        try:
            resolve(reference)
        except ConfigError as error:
            assert "\n" not in error.message
            return False
    return True


def test_only_what_is_marked_for_graphs_resolves_from_synthloom_packages() -> None:
    """Every public callable of the built-in nodes and the workflows' glue, tried as a python `function`
    (the rule of tools, verifier, output_schema and graph too) and as a node `type`."""
    references = installed_callables()
    assert "synthloom_nodes.dedup.disk:IndexFile" in references and len(references) > 100
    as_function = {reference for reference in references if resolves(reference, import_object)}
    assert as_function == EXPORTED_FOR_GRAPHS
    as_type = {reference for reference in references if resolves(reference, resolve_node_type)}
    for reference in references:
        target = getattr(importlib.import_module(reference.partition(":")[0]), reference.partition(":")[2])
        is_node_type = isinstance(target, NodeFunction) or (isinstance(target, type) and issubclass(target, Node))
        assert (reference in as_type) == is_node_type, reference
    shipped = set()
    for graph in Path(synthloom_graphs.__file__).parent.glob("*.yaml"):
        for node_spec in yaml.safe_load(graph.read_text())["nodes"].values():
            shipped.update(reference for key, reference in code_references(node_spec) if key != "type")
            if ":" in node_spec["type"]:
                assert node_spec["type"] in as_type, (graph.name, node_spec["type"])
    assert shipped and shipped <= as_function


@pytest.mark.parametrize(("node_spec", "written"), [
    ({"type": "synthloom_graphs.agentinstruct:read_document"}, "document"),
    ({"type": "python", "function": "synthloom_graphs.sycophancy:build_claim_prompts", "args": {"names": "SECRET"}},
     "opinion_prompt")], ids=["document path from the seed", "user names file"])
def test_exported_workflow_glue_reads_only_files_beside_the_graph(tmp_path: Path, node_spec: dict[str, Any],
                                                                  written: str) -> None:
    """What stays nameable reads a file named by the seed or the graph only beside the graph or in an
    allowed folder (both read it with `read_text` from any path and put it in the record)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret line\n")
    folder = tmp_path / "stranger"
    folder.mkdir()
    (folder / "seeds.jsonl").write_text(json.dumps({"id": "r1", "path": str(secret), "claim": "c",
                                                    "label": True}) + "\n")
    node_spec = json.loads(json.dumps(node_spec).replace("SECRET", str(secret)))
    path = graph_file(folder, {"a": node_spec}, outputs=[{"name": "o", "format": "sft", "messages": [
        {"role": "user", "content": "{{ " + written + " }}"},
        {"role": "assistant", "content": "x"}]}])
    done = synthloom_cli("run", path, "-o", tmp_path / "out", "-q", cwd=folder)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    failure = json.loads((tmp_path / "out" / "failed.jsonl").read_text())
    assert failure["error_type"] == "RecordError" and "is outside the graph's folder" in failure["message"]
    assert not any("top secret" in item.read_text() for item in (tmp_path / "out").iterdir() if item.is_file())


def test_addition_claims_has_a_ceiling() -> None:
    from synthloom_graphs.sycophancy import MAX_ADDITION_CLAIMS, addition_claims
    assert len(addition_claims(3)) == 3
    with pytest.raises(RecordError, match=f"count 100000000 is not between 0 and {MAX_ADDITION_CLAIMS}"):
        addition_claims(100_000_000)


# -- 2. files beside a graph: only the modules it names, loaded by path, never run by validate ---------------

PLANTED = ["webcolors", "fqdn", "rfc3339_validator", "rfc3986_validator", "rfc3987", "uri_template", "isoduration",
           "jsonpointer", "rfc3987_syntax", "aiodns", "brotli", "brotlicffi", "redis", "cassandra", "pybloom_live",
           "numpy_financial", "chardet", "cchardet", "simplejson", "ujson", "uvloop", "socks", "zstd", "lz4"]
"""Optional modules libraries synthloom uses try to import when they are present."""


def plant(folder: Path, markers: Path) -> None:
    for name in PLANTED:
        (folder / f"{name}.py").write_text(f"open({str(markers / name)!r}, 'w').write('ran')\n")


def test_files_beside_a_graph_that_names_no_python_never_run(fake_llm: Callable[..., FakeOpenAI],
                                                             tmp_path: Path) -> None:
    server = fake_llm()
    markers = tmp_path / "markers"
    markers.mkdir()
    folder = tmp_path / "stranger"
    path = graph_file(folder, {"ask": {"type": "llm", "model": "w", "output": "answer",
                                       "output_schema": {"type": "object", "properties": {
                                           "site": {"type": "string", "format": "uri"},
                                           "colour": {"type": "string", "format": "color"}}},
                                       "prompt": "{{ topic }}"}},
                      models={"w": model_spec(server)})
    plant(folder, markers)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    checked = synthloom_cli("validate", path, cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert "python it runs: none" in checked.stdout
    done = synthloom_cli("run", path, "-o", tmp_path / "out", "-q", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert sorted(marker.name for marker in markers.iterdir()) == []


NODES = '''
from pathlib import Path
from synthloom import node

Path({marker!r}).write_text("ran")


@node(writes=["words"])
def word_count(topic: str) -> dict:
    return {{"words": len(topic.split())}}
'''


def test_validate_lists_graph_folder_code_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_nodes.py").write_text(NODES.format(marker=str(marker)))
    path = graph_file(folder, {"count": {"type": "my_nodes:word_count"}})
    done = synthloom_cli("validate", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "nodes.count: my_nodes:word_count <- the graph's folder" in done.stdout and "read, not run" in done.stdout
    assert "not checked: the keys of count" in done.stdout
    assert not marker.exists()
    shown = synthloom_cli("show", path, cwd=tmp_path)
    assert shown.returncode == 0 and "n_count" in shown.stdout and not marker.exists(), shown.stderr
    ran = synthloom_cli("run", path, "-o", tmp_path / "out", "-q", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert marker.exists()
    assert [json.loads(line)["words"] for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()] == [1]

    marker.unlink()  # a downloaded run: `card` draws its graph without running the code beside it
    (tmp_path / "out" / "README.md").unlink()
    carded = synthloom_cli("card", tmp_path / "out", cwd=tmp_path)
    assert carded.returncode == 0, carded.stderr
    assert not marker.exists() and "n_count" in (tmp_path / "out" / "README.md").read_text()


def test_graph_folder_modules_are_loaded_by_path_and_nothing_else_can_find_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project_in_process"
    folder.mkdir()
    (folder / "fold_nodes.py").write_text(NODES.format(marker=str(tmp_path / "ran.txt")))
    (folder / "fold_planted.py").write_text("raise SystemExit('planted')\n")
    graph = synthloom.load(graph_file(folder, {"count": {"type": "fold_nodes:word_count"}}))
    assert [use.target for use in graph.code.uses] == ["fold_nodes:word_count"]
    assert str(folder) not in sys.path and importlib.util.find_spec("fold_planted") is None


# -- 3. keys only to hosts the user chose --------------------------------------------------------------------

def key_graph(folder: Path, server: FakeOpenAI, **model: Any) -> Path:
    spec = {"w": model_spec(server, api_key_env="OPENAI_API_KEY", **model)}
    ask = {"type": "llm", "model": "w", "output": "answer", "messages": [{"role": "user", "content": "{{ topic }}"}]}
    return graph_file(folder, {"ask": ask}, models=spec)


VICTIM = {"OPENAI_API_KEY": "sk-users-own-key"}


def test_a_graph_cannot_send_a_provider_key_to_its_own_server(fake_llm: Callable[..., FakeOpenAI],
                                                              tmp_path: Path) -> None:
    server = fake_llm()
    path = key_graph(tmp_path, server)
    for command in (["validate", path], ["run", path, "-o", tmp_path / "out", "-q"], ["preview", path]):
        refused(synthloom_cli(*command, env=VICTIM, cwd=tmp_path), "graph.yaml:", "models.w",
                "$OPENAI_API_KEY", "127.0.0.1", "--allow-key-host 127.0.0.1", "api.openai.com")
    assert server.headers_seen == []
    with pytest.raises(ConfigError, match=r"models\.w\.api_key_env: .*\$OPENAI_API_KEY to '127\.0\.0\.1'"):
        synthloom.load(path)


@pytest.mark.parametrize("consent", [["--allow-key-host", "127.0.0.1"], ["--trust-graph"], ["--endpoint", "URL"],
                                     ["--set", "models.w.base_url=URL"], ["env"]])
def test_the_user_names_the_host_with_one_flag_or_one_line(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path,
                                                            consent: list[str]) -> None:
    server = fake_llm()
    path = key_graph(tmp_path, server)
    env = {**VICTIM, **({"SYNTHLOOM_KEY_HOSTS": "127.0.0.1"} if consent == ["env"] else {})}
    flags = [flag.replace("URL", server.url) for flag in consent if flag != "env"]
    listed = synthloom_cli("validate", path, *flags, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "models.w: $OPENAI_API_KEY -> 127.0.0.1 <- " in listed.stdout
    done = synthloom_cli("run", path, "-o", tmp_path / "out", "-q", "--no-cache", *flags, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert server.headers_seen and server.headers_seen[0]["Authorization"] == "Bearer sk-users-own-key"


def test_a_providers_key_goes_to_its_own_host_over_https_only(tmp_path: Path) -> None:
    base = {"backend": "openai", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}
    nodes = {"ask": {"type": "llm", "model": "w", "output": "answer", "prompt": "{{ topic }}"}}
    own = graph_file(tmp_path / "own", nodes, models={"w": {"profile": "openai"}})
    listed = synthloom_cli("validate", own)
    assert listed.returncode == 0, listed.stderr
    assert "models.w: $OPENAI_API_KEY -> api.openai.com <- the provider's own host" in listed.stdout
    for url, host in [("http://api.openai.com/v1", "api.openai.com"),
                      ("https://api.openai.com@evil.example/v1", "evil.example"),
                      ("https://api.openai.com.evil.example/v1", "api.openai.com.evil.example")]:
        path = graph_file(tmp_path / host, nodes, models={"w": {**base, "base_url": url}})
        refused(synthloom_cli("validate", path), "models.w", f"to '{host}'")


def test_a_subgraphs_model_follows_the_same_key_rule(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm()
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({
        "name": "child", "models": {"w": model_spec(server, api_key_env="OPENAI_API_KEY")},
        "nodes": {"ask": {"type": "llm", "model": "w", "output": "answer", "prompt": "{{ topic }}"}}}))
    path = graph_file(tmp_path, {"sub": {"type": "subgraph", "graph": "child.yaml", "inputs": {"topic": "topic"},
                                         "outputs": {"answer": "answer"}}})
    refused(synthloom_cli("validate", path, env=VICTIM), "child.yaml:", "in subgraph 'sub'", "$OPENAI_API_KEY")
    allowed = synthloom_cli("validate", path, "--allow-key-host", "127.0.0.1", env=VICTIM)
    assert allowed.returncode == 0 and "models.w: $OPENAI_API_KEY -> 127.0.0.1" in allowed.stdout, allowed.stderr


# -- 4. secrets in URLs and params are written nowhere -------------------------------------------------------

def test_url_credentials_and_nested_secret_params_reach_no_file(fake_llm: Callable[..., FakeOpenAI],
                                                                tmp_path: Path) -> None:
    server = fake_llm()
    host_port = server.url.split("//", 1)[1]
    secrets = ["hunter2pass", "sk-nested-secret", "tok-in-header", "qs-secret-value"]
    models = {"w": {**model_spec(server), "base_url": f"http://alice:hunter2pass@{host_port}",
                    "params": {"extra": {"api_key": "sk-nested-secret",
                                              "headers": [{"Authorization": "Bearer tok-in-header"}]}}},
              "down": {"backend": "openai", "model": "m", "max_retries": 0,
                       "base_url": "http://bob:hunter2pass@127.0.0.1:9/v1?api_key=qs-secret-value"}}
    nodes = {"ask": {"type": "llm", "model": "w", "output": "answer", "prompt": "{{ topic }}"},
             "again": {"type": "llm", "model": "down", "output": "again", "prompt": "{{ answer }}"}}
    path = graph_file(tmp_path, nodes, edges=[["ask", "again"]], models=models)
    done = synthloom_cli("run", path, "-o", tmp_path / "out", "--no-cache", cwd=tmp_path)
    assert done.returncode == 1 and "1 of 1 records failed" in done.stderr, done.stderr  # "down" is down
    failed = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and "cannot reach http://127.0.0.1:9/v1" in failed[0]["message"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Graph file" in card and "alice:<hidden>@" not in card and "<hidden>" in card
    written = {file: file.read_text(errors="replace") for file in (tmp_path / "out").rglob("*") if file.is_file()}
    for secret in secrets:
        for file, text in written.items():
            assert secret not in text, (secret, file)
        assert secret not in done.stdout + done.stderr


# -- 5. names stay inside the run directory; the card shows what a graph says as text ------------------------

def test_pool_and_node_names_cannot_lead_out_of_the_run(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.jsonl").write_text("keep me\n")
    pool = {"type": "novelty", "field": "topic", "pool": str(victim / "precious")}
    path = graph_file(tmp_path / "g1", {"seen": pool})
    refused(synthloom_cli("validate", path), "graph.yaml:", "nodes.seen.pool", "a pool name")
    refused(synthloom_cli("run", path, "-o", tmp_path / "out1", "-q"), "a pool name")
    relative = graph_file(tmp_path / "g2", {"seen": {**pool, "pool": "../../victim/precious"}})
    refused(synthloom_cli("validate", relative), "nodes.seen.pool")
    named = graph_file(tmp_path / "g3", {"../../victim/notes": {"type": "dedup", "field": "topic"}})
    refused(synthloom_cli("validate", named), "graph.yaml:", "a node name '../../victim/notes'")
    assert (victim / "precious.jsonl").read_text() == "keep me\n" and not (victim / "notes.jsonl").exists()


def test_a_run_file_is_never_reached_through_a_symlink_out(tmp_path: Path) -> None:
    from synthloom.sandbox.run_paths import path_in_run
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "pools").symlink_to(outside)
    with pytest.raises(ConfigError, match="leads outside the run directory"):
        path_in_run(run, "pools", "seen")
    assert path_in_run(run, None, "sft") == run / "sft.jsonl"


def test_the_card_shows_names_and_description_as_text(tmp_path: Path) -> None:
    hostile = 'x"]\n```\n<img src=x onerror=alert(1)>'
    name = "a`<img src=x onerror=alert(1)>`"
    spec = {"description": "<script>alert(1)</script>\n# Owned\n```\n[click](javascript:alert(1))\n![t](http://t.example/p)",
            "nodes": {name: {"type": "filter", "when": "True", "reason": hostile.replace("\n", " ")}}}
    path = graph_file(tmp_path, spec.pop("nodes"), **spec)
    synthloom.run(path, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    body = card.split("## Graph file")[0]
    for bad in ("<script", "<img", "![t]", "\n# Owned"):
        assert bad not in body, bad
    assert "\\[click\\](javascript" in body and not re.search(r"(?<!\\)\]\(", body)  # no link, the words stay
    assert body.count("```") == 2 + body.count("```python") * 2  # the Mermaid fence, and Loading's if any
    assert '#96;#60;img src=x onerror=alert(1)>#96;<br/>' in body
    shown = synthloom_cli("show", path)
    assert shown.returncode == 0 and "<img" not in shown.stdout, shown.stderr


def test_a_package_beside_the_graph_imports_its_own_modules_but_no_sibling(tmp_path: Path) -> None:
    """Without the folder on sys.path, a package's relative imports work and a bare sibling import does not."""
    folder = tmp_path / "project_with_package"
    (folder / "pkg_nodes").mkdir(parents=True)
    (folder / "pkg_nodes" / "__init__.py").write_text("from .counting import word_count\n")
    (folder / "pkg_nodes" / "counting.py").write_text(NODES.format(marker=str(tmp_path / "ran.txt")))
    graph = synthloom.load(graph_file(folder, {"count": {"type": "pkg_nodes.counting:word_count"}}))
    assert graph.nodes["count"].writes() == {"words"}
    (folder / "lone_nodes.py").write_text("from sibling_helper import WORDS\n")
    (folder / "sibling_helper.py").write_text("WORDS = 1\n")
    with pytest.raises(ConfigError, match=r"cannot import 'lone_nodes' \(No module named 'sibling_helper'\); "
                                          r"the graph's folder is not on the import path"):
        synthloom.load(graph_file(folder, {"count": {"type": "lone_nodes:WORDS"}}))

"""Every file a graph names goes through one reader (synthloom.sandbox.files): regular files only, from the
graph's folder or a folder the user allowed, never /proc, /dev or /sys, capped or streamed.

The refusals run in real subprocesses, capped in CPU time (a FIFO that blocked would hang the test, not pass
it), and the seed files' peak memory is measured."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PEAK_SCRIPT = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
               "print('peak-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(done.returncode)")
CPU_SECONDS = 60
WALL_SECONDS = 120
MEMORY_BYTES = 3 << 30
"""Address space of the capped process: far above a run's, far below what reading /dev/zero whole takes."""


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def capped_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, list[str], float]:
    """`synthloom ARGS` in a CPU-, memory- and time-capped process group: (exit code, error lines, peak MB).
    A process blocked on a FIFO uses no CPU, so the wall-clock cap kills the whole group."""
    environment = {key: value for key, value in os.environ.items() if key != "SYNTHLOOM_ALLOW_CODE"}
    process = subprocess.Popen([sys.executable, "-c", PEAK_SCRIPT, sys.executable, "-m", "synthloom.cli",
                                *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=cwd, env={**environment, **(env or {})}, preexec_fn=_cap,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=WALL_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"synthloom {' '.join(map(str, args))} still ran after {WALL_SECONDS} s") from None
    lines = [line for line in stderr.splitlines() if line.strip()]
    peak = [line for line in lines if line.startswith("peak-kib ")]
    errors = [line for line in lines if line.startswith("error: ") or "Traceback" in line]
    return process.returncode, errors, int(peak[-1].split()[1]) / 1024 if peak else 0.0


def write_graph(folder: Path, nodes: dict[str, Any], **extra: Any) -> Path:
    spec = {"name": "t", "seed": {"source": {"type": "none", "rows": 2}},
            "models": {"default": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
            "nodes": nodes, **extra}
    path = folder / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def plant(folder: Path, kind: str, name: str) -> str:
    """A path of the given kind, as the graph would write it."""
    if kind == "fifo":
        os.mkfifo(folder / name)
        return name
    if kind == "symlink to /dev/zero":
        (folder / name).symlink_to("/dev/zero")
        return name
    if kind == "outside":
        (folder.parent / "elsewhere").mkdir(exist_ok=True)
        (folder.parent / "elsewhere" / name).write_text('{"text": "a secret"}\n')
        return str(folder.parent / "elsewhere" / name)
    return kind  # an absolute system path


def sampler(path: str) -> dict[str, Any]:
    return {"pick": {"type": "sampler", "slots": {"x": {"file": path}}}}


def few_shot(path: str) -> dict[str, Any]:
    return {"ask": {"type": "llm", "prompt": "{{ examples }}", "output": "answer",
                    "few_shot": {"pool": path, "k": 1}}}


def preload(path: str) -> dict[str, Any]:
    return {"novel": {"type": "novelty", "field": "index", "pool": "tasks",
                      "preload": {"file": path, "field": "text"}}}


CASES = [
    (sampler, "/proc/self/environ", "nodes.pick.slots.x: slot file /proc/self/environ is under /proc"),
    (sampler, "fifo", "nodes.pick.slots.x: .*pool.jsonl is a pipe; give a regular file"),
    (sampler, "outside", "is outside the graph's folder .*SYNTHLOOM_ALLOW_READ="),
    (few_shot, "/dev/zero", "nodes.ask.few_shot.pool: the few-shot pool /dev/zero is under /dev"),
    (few_shot, "symlink to /dev/zero", "nodes.ask.few_shot.pool: .*pool.jsonl is under /dev"),
    (few_shot, "fifo", "nodes.ask.few_shot.pool: .*is a pipe"),
    (few_shot, "outside", "nodes.ask.few_shot.pool: .*is outside the graph's folder"),
    (preload, "/dev/zero", "nodes.novel.preload.file: pool preload file /dev/zero is under /dev"),
    (preload, "fifo", "nodes.novel.preload.file: .*is a pipe"),
    (preload, "/proc/self/environ",
     "nodes.novel.preload.file: pool preload file /proc/self/environ is under /proc"),
]


@pytest.mark.parametrize("make,kind,words", CASES, ids=[f"{make.__name__}-{kind}" for make, kind, _ in CASES])
def test_a_file_a_graph_names_must_be_a_regular_file_beside_it(tmp_path: Path, make: Any, kind: str,
                                                                words: str) -> None:
    import re
    folder = tmp_path / "graph"
    folder.mkdir()
    path = write_graph(folder, make(plant(folder, kind, "pool.jsonl")))
    code, errors, _ = capped_cli("run", path, "-o", tmp_path / "out", cwd=tmp_path)
    assert code == 2 and len(errors) == 1 and re.search(words, errors[0]), (code, errors)


def test_a_folder_the_user_allows_can_be_read(tmp_path: Path) -> None:
    folder = tmp_path / "graph"
    folder.mkdir()
    path = write_graph(folder, sampler(plant(folder, "outside", "values.jsonl")),
                       outputs=[{"name": "rows", "format": "raw"}])
    code, errors, _ = capped_cli("run", path, "-o", tmp_path / "out", cwd=tmp_path,
                                 env={"SYNTHLOOM_ALLOW_READ": str(tmp_path / "elsewhere")})
    assert code == 0, errors
    rows = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    assert [row["x"] for row in rows] == [{"text": "a secret"}] * 2


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_subgraph_that_is_not_a_regular_file_fails_validate_at_once(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "graph"
    folder.mkdir()
    child = plant(folder, kind, "child.yaml")
    path = write_graph(folder, {"sub": {"type": "subgraph", "graph": child, "outputs": {"y": "y"}}})
    code, errors, _ = capped_cli("validate", path, cwd=tmp_path)
    assert code == 2 and len(errors) == 1 and "nodes.sub.graph: " in errors[0], errors
    assert "is a pipe" in errors[0] or "is under /dev" in errors[0]


def test_a_huge_json_seed_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """2 GB (sparse, so it costs no disk): refused at the 64 MB a json seed may be, in memory far below it."""
    seed = tmp_path / "rows.json"
    with seed.open("wb") as handle:
        handle.truncate(2_000_000_000)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seed": {"source": {"type": "json", "path": "rows.json"}},
                                    "nodes": {"keep": {"type": "filter", "when": "True", "reason": "x"}}}))
    code, errors, peak = capped_cli("run", path, "-o", tmp_path / "out", cwd=tmp_path)
    assert code == 2 and len(errors) == 1 and "seed file" in errors[0] and "larger than 64 MB" in errors[0], errors
    assert peak < 400, peak


def test_a_csv_seed_line_past_the_cap_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    seed = tmp_path / "rows.csv"
    with seed.open("w") as handle:
        handle.write("text\n")
        for _ in range(12):
            handle.write("a" * 1_000_000)  # 12 MB on one line, past the 10 MB a row may be
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seed": {"source": {"type": "csv", "path": "rows.csv"}},
                                    "nodes": {"keep": {"type": "filter", "when": "True", "reason": "x"}}}))
    code, errors, peak = capped_cli("run", path, "-o", tmp_path / "out", cwd=tmp_path)
    assert code == 2 and len(errors) == 1 and "a line longer than 10000000 bytes" in errors[0], errors
    assert peak < 400, peak


def dedup_graph(folder: Path, index: str) -> Path:
    """A graph keeping a dedup index in `index` (relative to the graph file), over two texts of its own."""
    (folder / "seeds.jsonl").write_text('{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n')
    return write_graph(folder, {"unique": {"type": "dedup", "field": "text", "method": "exact", "index": index}},
                       seed={"source": {"type": "jsonl", "path": "seeds.jsonl"}},
                       outputs=[{"name": "rows", "format": "raw"}])


@pytest.mark.parametrize("where", ["beside the graph", "outside"])
def test_a_dedup_index_folder_is_refused_at_validate_unless_the_user_allows_it(tmp_path: Path, where: str) -> None:
    """An index folder is read and written across runs: not even the graph's own folder (which may be your
    home folder) holds one without consent. The refusal names the key and the flag that allows it."""
    folder = tmp_path / "graph"
    folder.mkdir()
    index = "idx" if where == "beside the graph" else str(tmp_path / "elsewhere" / "idx")
    path = dedup_graph(folder, index)
    for command in (["validate", path], ["run", path, "-o", tmp_path / "out"]):
        code, errors, _ = capped_cli(*command, cwd=tmp_path)
        assert code == 2 and len(errors) == 1, errors
        assert "nodes.unique.index: index folder " in errors[0] and "--allow-read " in errors[0], errors
        assert "SYNTHLOOM_ALLOW_READ=" in errors[0], errors
    assert not (tmp_path / "out").exists() and not Path(index if Path(index).is_absolute() else folder / index
                                                        ).exists()
    allowed = folder if where == "beside the graph" else tmp_path / "elsewhere"
    code, errors, _ = capped_cli("validate", path, "--allow-read", allowed, cwd=tmp_path)
    assert code == 0, errors
    code, errors, _ = capped_cli("run", path, "-o", tmp_path / "out", cwd=tmp_path,
                                 env={"SYNTHLOOM_ALLOW_READ": str(allowed)})
    assert code == 0, errors
    assert (allowed / "idx" / "exact.sqlite").is_file()


def test_allow_read_reaches_every_command_that_loads_a_graph(tmp_path: Path) -> None:
    """`--allow-read DIR` (repeatable) is the flag of SYNTHLOOM_ALLOW_READ: a subgraph file, a sampler file
    outside the graph's folder are refused without it and read with it, by run, validate, show, preview and
    report."""
    folder = tmp_path / "graph"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "child.yaml").write_text(yaml.safe_dump(
        {"name": "child", "nodes": {"pick": {"type": "sampler", "slots": {"x": ["a"]}}}}))
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "values.jsonl").write_text('{"text": "a secret"}\n')
    path = write_graph(folder, {"sub": {"type": "subgraph", "graph": str(tmp_path / "elsewhere" / "child.yaml"),
                                        "outputs": {"y": "x"}},
                                "pick": {"type": "sampler", "slots": {"z": {"file": str(tmp_path / "more" /
                                                                                      "values.jsonl")}}}},
                       outputs=[{"name": "rows", "format": "raw"}])
    flags = ["--allow-read", tmp_path / "elsewhere", "--allow-read", tmp_path / "more"]
    out = tmp_path / "out"
    for command in (["validate", path], ["show", path], ["preview", path, "--json"],
                    ["run", path, "-o", out]):
        code, errors, _ = capped_cli(*command, cwd=tmp_path)
        assert code == 2 and len(errors) == 1 and "--allow-read " in errors[0], (command, errors)
        code, errors, _ = capped_cli(*command, *flags, cwd=tmp_path)
        assert code == 0, (command, errors)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(row["y"], row["z"]) for row in rows] == [("a", {"text": "a secret"})] * 2
    code, errors, _ = capped_cli("report", out, "--graph", path, cwd=tmp_path)
    assert code == 2 and "--allow-read " in errors[0], errors
    code, errors, _ = capped_cli("report", out, "--graph", path, *flags, cwd=tmp_path)
    assert code == 0 and '<figure class="diagram">' in (out / "report.html").read_text(), errors
    (out / "README.md").unlink()
    assert capped_cli("card", out, cwd=tmp_path)[0] == 0
    assert "```mermaid" not in (out / "README.md").read_text()  # the graph does not load: no picture
    assert capped_cli("card", out, *flags, cwd=tmp_path)[0] == 0
    assert "```mermaid" in (out / "README.md").read_text()


def test_allow_read_in_the_python_api(tmp_path: Path) -> None:
    import synthloom
    folder = tmp_path / "graph"
    folder.mkdir()
    path = write_graph(folder, sampler(plant(folder, "outside", "values.jsonl")),
                       outputs=[{"name": "rows", "format": "raw"}])
    with pytest.raises(synthloom.ConfigError, match="nodes.pick.slots.x: .*allow-read"):
        synthloom.run(path, tmp_path / "refused")
    result = synthloom.run(path, tmp_path / "out", allow_read=[tmp_path / "elsewhere"])
    assert [row["x"] for row in result.records("rows")] == [{"text": "a secret"}] * 2
    graph = synthloom.load(dedup_graph(folder, "idx"), allow_read=[str(folder)])
    synthloom.run(graph, tmp_path / "deduped")
    assert (folder / "idx" / "exact.sqlite").is_file()


def document_graph(folder: Path, paths: list[str], node_type: str) -> Path:
    """A graph whose records each name a file, read by `node_type` (the agentinstruct workflow's reader)."""
    (folder / "seeds.jsonl").write_text("".join(json.dumps({"id": f"r{number}", "path": path}) + "\n"
                                                for number, path in enumerate(paths)))
    spec = {"name": "t", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
            "nodes": {"read": {"type": node_type}},
            "outputs": [{"name": "o", "format": "sft", "messages": [
                {"role": "user", "content": "{{ title }}"}, {"role": "assistant", "content": "{{ document }}"}]}]}
    path = folder / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_document_path_in_a_record_is_read_through_the_reader(tmp_path: Path) -> None:
    """agentinstruct's read_document takes its path from the record: the same rules as a sampler `file:`.
    Each bad path fails its record in one line; the environment never reaches the outputs."""
    graph_dir = tmp_path / "graph"
    graph_dir.mkdir()
    paths = [plant(graph_dir, kind, f"doc{number}")
             for number, kind in enumerate(["/proc/self/environ", "/dev/zero", "fifo", "symlink to /dev/zero",
                                            "outside"])]
    (graph_dir / "fine.txt").write_text("A title\nThe body.\n")
    graph = document_graph(graph_dir, [*paths, "fine.txt"], "synthloom_graphs.agentinstruct:read_document")
    code, errors, _ = capped_cli("run", graph, "-o", tmp_path / "out", "--set", "run.max_failure_rate=1",
                                 cwd=tmp_path, env={"SECRET_FOR_TEST": "do-not-leak"})
    assert code == 0, errors
    failed = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    failed.sort(key=lambda entry: str(entry["id"]))  # records settle in any order: r0..r4 by the seed's order
    assert [entry["error_type"] for entry in failed] == ["RecordError"] * 5
    assert all("traceback" not in entry and "\n" not in entry["message"] for entry in failed)
    reasons = [entry["message"] for entry in failed]
    assert "under /proc" in reasons[0] and "under /dev" in reasons[1] and "a pipe" in reasons[2]
    assert "under /dev" in reasons[3] and "outside the graph's folder" in reasons[4], reasons
    written = (tmp_path / "out" / "o.jsonl").read_text()
    assert "The body." in written and "do-not-leak" not in written and "a secret" not in written


def test_a_record_that_runs_out_of_memory_fails_in_one_line(tmp_path: Path) -> None:
    """A MemoryError met by one record is a bound, not a bug: its failure record names it without a
    traceback, and the run goes on."""
    (tmp_path / "hog.py").write_text(
        "from synthloom import node\n\n\n@node(writes=['document', 'title'])\n"
        "def hog(path: str) -> dict[str, object]:\n"
        "    if path == 'big':\n        return {'document': bytearray(8 << 30), 'title': ''}\n"
        "    return {'document': path, 'title': path}\n")
    graph = document_graph(tmp_path, ["big", "small"], "hog:hog")
    code, errors, _ = capped_cli("run", graph, "-o", tmp_path / "out", "--set", "run.max_failure_rate=1",
                                 cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert code == 0, errors
    failed = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and failed[0]["error_type"] == "MemoryError"
    assert "traceback" not in failed[0] and "memory" in failed[0]["message"]
    assert "small" in (tmp_path / "out" / "o.jsonl").read_text()


@pytest.mark.parametrize("kind", ["symlink to environ", "outside", "/proc/self/environ", "a name with a path"])
def test_a_model_profile_is_a_packaged_name_or_a_file_through_the_reader(tmp_path: Path, kind: str) -> None:
    """`models.<name>.profile` reads a packaged configs/<name>.yaml, or a YAML file beside the graph or in an
    allowed folder: never /proc, never a file elsewhere without consent."""
    graph_dir = tmp_path / "graph"
    graph_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "p.yaml").write_text("backend: openai\nmodel: from-elsewhere\n")
    profile, expected = {"symlink to environ": ("p.yaml", "under /proc"),
                         "outside": (str(tmp_path / "elsewhere" / "p.yaml"), "outside the graph's folder"),
                         "/proc/self/environ": ("/proc/self/environ.yaml", "under /proc"),
                         "a name with a path": ("../../../../../../proc/self/environ", "no profile")}[kind]
    if kind == "symlink to environ":
        (graph_dir / "p.yaml").symlink_to("/proc/self/environ")
    graph = write_graph(graph_dir, sampler("s.txt"),
                        models={"default": {"profile": profile, "base_url": "http://127.0.0.1:9/v1"}})
    (graph_dir / "s.txt").write_text("a\n")
    code, errors, _ = capped_cli("validate", graph, cwd=tmp_path)
    assert code == 2 and len(errors) == 1 and "models.default.profile" in errors[0] and expected in errors[0], \
        errors
    if kind == "outside":
        code, errors, _ = capped_cli("validate", graph, "--allow-read", tmp_path / "elsewhere", cwd=tmp_path)
        assert code == 0, errors

"""The embedded model's thread count: the graph's `threads:`, else $SYNTHLOOM_THREADS, else the CPUs that
other processes leave free (real busy processes, real /proc; the model itself is not loaded here)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from synthloom import ConfigError
from synthloom.config.schema import ModelConfig
from synthloom.models.llama.client import LocalClient
from synthloom.models.llama.threads import (
    ENV_VAR,
    MAX_DEFAULT_THREADS,
    busy_elsewhere,
    configured_threads,
    default_threads,
    usable_cpus,
)

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc")


def test_the_graph_setting_wins_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    assert configured_threads(3) == 3
    assert LocalClient("m", ModelConfig(backend="local", path="x.gguf", threads=3)).threads == 3
    assert LocalClient("m", ModelConfig(backend="local", path="x.gguf")).threads == 1
    monkeypatch.setenv(ENV_VAR, " 2 ")
    assert configured_threads(None) == 2
    monkeypatch.delenv(ENV_VAR)
    assert configured_threads(None) is None  # measured by the engine when the model loads


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ConfigError, match=f"SYNTHLOOM_THREADS must be a whole number of threads.*{value!r}"):
        configured_threads(None)


def test_a_bad_environment_value_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    """One line on stderr, exit 2, and no output directory: the clients are built before the run starts."""
    (tmp_path / "seeds.jsonl").write_text(json.dumps({"topic": "tides"}) + "\n")
    (tmp_path / "unloadable.gguf").write_bytes(b"")  # a file that exists: the threads are refused before any load
    graph = tmp_path / "g.yaml"
    graph.write_text(textwrap.dedent(f"""
        name: t
        seed: {{source: {{type: jsonl, path: seeds.jsonl}}}}
        models:
          default: {{backend: local, path: {tmp_path / "unloadable.gguf"}}}
        nodes:
          answer: {{type: llm, output: answer, prompt: "Tell me about {{{{ topic }}}}."}}
        outputs: [{{name: raw, format: raw, fields: [answer]}}]
        """))
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(tmp_path / "out"), "-q"],
                          capture_output=True, text=True, timeout=120, env={**_env(), ENV_VAR: "lots"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: SYNTHLOOM_THREADS must be a whole number") and "'lots'" in last, done.stderr
    assert not (tmp_path / "out").exists()


def test_threads_below_one_is_refused_at_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        ModelConfig(backend="local", threads=0)


@pytest.fixture
def busy_processes() -> Iterator[int]:
    """As many CPU-bound processes as this process has CPUs, each seen running before the test goes on."""
    count = usable_cpus()
    hogs = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 120\n"
                              "while time.monotonic() < end: pass"]) for _ in range(count)]
    try:
        deadline = time.monotonic() + 60
        while not all(_state(hog.pid) == "R" for hog in hogs):
            assert time.monotonic() < deadline, "the busy processes never started running"
            time.sleep(0.05)
        yield count
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_the_default_leaves_the_cpus_other_processes_keep_busy(busy_processes: int) -> None:
    """With every CPU taken by another process, llama.cpp gets one thread, not one per core: its threads wait
    for each other at every step, so one that loses its core stalls the rest."""
    assert busy_elsewhere() >= busy_processes
    assert default_threads() == 1


def test_the_default_is_within_the_cpus_this_process_may_use() -> None:
    assert 1 <= default_threads() <= min(usable_cpus(), MAX_DEFAULT_THREADS)


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != ENV_VAR}

"""Progress where no terminal watches (a log file, CI, nohup, `| tee`): a heartbeat line every few seconds
while the run goes on, and a final line that says why records were dropped or failed."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph

SEEDS = [{"id": f"t{index}", "topic": f"topic {index}", "keep": index % 3 != 0} for index in range(10)]


def heartbeats(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("progress ")]


def test_heartbeat_lines_appear_while_the_run_goes_on(fake_llm: Callable[..., FakeOpenAI],
                                                      write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """The last record is held by the server, so the run cannot end until the test has read heartbeats that
    show the other nine settled: they come during the run, not only at its end."""
    server = fake_llm(hold=["^Ask about topic 9$"])
    spec = chain_graph(server, timeout=600)  # the held call waits for the test, not for a timeout
    spec["nodes"]["keep"] = {"type": "filter", "rules": [{"when": "keep", "reason": "not wanted"}]}
    spec["edges"].append(["answer", "keep"])
    graph = write_graph(spec, SEEDS)
    log = tmp_path / "stderr.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o",
                                    str(tmp_path / "out"), "-n", "10", "--no-cache", "--progress-every", "0.2"],
                                   stdout=subprocess.PIPE, stderr=sink, text=True)
        deadline = time.monotonic() + 120
        while (process.poll() is None and time.monotonic() < deadline
               and sum("settled 9/10" in line for line in heartbeats(log)) < 2):
            time.sleep(0.05)
        assert process.poll() is None, log.read_text()  # still running: held by the server
        during = heartbeats(log)
        server.release()
        stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0, log.read_text()
    assert sum("settled 9/10" in line for line in during) >= 2
    held = next(line for line in during if "settled 9/10" in line)
    assert re.fullmatch(r"progress \d+s: settled 9/10 · written 6 · dropped 3 \(keep: not wanted 3\) · failed 0 · "
                        r"[\d.]+ records/s · ETA \S+", held), held
    assert "settled 10/10 · written 6 · dropped 4 (keep: not wanted 4)" in heartbeats(log)[-1]  # the final line
    summary = stdout.strip().splitlines()[-1]
    assert "6 records written (sft: 6, raw: 6), 0 failed, 4 dropped (keep: not wanted 4)" in summary


def test_the_final_line_names_why_records_failed(fake_llm: Callable[..., FakeOpenAI],
                                                 write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(fail_status=400)
    spec = chain_graph(server)
    spec["run"] = {"max_failure_rate": 1.0}
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(write_graph(spec, SEEDS[:3])), "-o",
                           str(tmp_path / "out"), "--no-cache", "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "0 records written (sft: 0, raw: 0), 3 failed (question: ModelCallError 3), 0 dropped" in done.stdout
    assert "progress " not in done.stderr  # -q: no heartbeat either


def test_a_bad_interval_is_one_line(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    graph = write_graph({"name": "n", "seed": {"source": {"type": "none", "rows": 1}},
                         "nodes": {"s": {"type": "sampler", "slots": {"x": ["a"]}}}})
    command = [sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(tmp_path / "out")]
    flag = subprocess.run([*command, "--progress-every", "0"], capture_output=True, text=True, timeout=120)
    assert flag.returncode == 2 and "--progress-every must be a positive number" in flag.stderr
    env = {**os.environ, "SYNTHLOOM_PROGRESS_EVERY": "soon"}
    variable = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert variable.returncode == 2 and "$SYNTHLOOM_PROGRESS_EVERY is 'soon'" in variable.stderr
    assert "Traceback" not in flag.stderr + variable.stderr and not (tmp_path / "out").exists()
    env["SYNTHLOOM_PROGRESS_EVERY"] = "0.1"  # the variable sets the interval when the flag is not given
    fine = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert fine.returncode == 0 and heartbeats_of(fine.stderr)


def heartbeats_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("progress ")]


def test_a_run_refused_at_its_start_is_still_one_line(fake_llm: Callable[..., FakeOpenAI],
                                                       write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """The refusal comes after the heartbeat started (the directory is checked as the run begins): no
    progress line joins the one-line error."""
    server = fake_llm()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sft.jsonl").write_text("someone's own data\n")
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(write_graph(chain_graph(server),
                           SEEDS[:2])), "-o", str(out), "--progress-every", "30"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "sft.jsonl" in done.stderr and "--overwrite" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr

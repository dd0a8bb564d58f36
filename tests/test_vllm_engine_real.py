"""Backend `vllm` for real: vLLM's CPU build in-process, synthloom running inside vLLM's own environment
(a subprocess: the project's environment never imports vLLM), on the shipped SmolLM2 converted to a
Hugging Face checkpoint. quickstart, dpo_weak_strong (two model names on one checkpoint: one engine) and
sycophancy end to end; and the one-line errors a user meets first. Marked `vllm`: minutes on a CPU."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.vllm_support import ENGINE, smollm2_checkpoint, synthloom_in_vllm_env

pytestmark = pytest.mark.vllm
OPENED = "[{when: 'True', reason: opened for the test}]"  # which drafts a 135M model gets right is not the point


def on_vllm(*models: str) -> list[str]:
    """--set lines putting each model on the in-process engine, on the converted checkpoint."""
    checkpoint = smollm2_checkpoint()
    return [part for model in models for override in (f"models.{model}.backend=vllm",
                                                      f"models.{model}.model={checkpoint}",
                                                      f"models.{model}.params.engine={ENGINE}")
            for part in ("--set", override)]


def run_in_process(workflow: str, out: Path, models: tuple[str, ...], *overrides: str) -> dict[str, Any]:
    sets = [part for override in overrides for part in ("--set", override)]
    done = synthloom_in_vllm_env("run", workflow, "-n", "3", "-o", str(out), "-q", "--no-cache",
                                 *on_vllm(*models), *sets)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("starting vLLM's engine") == 1, done.stderr[-3000:]  # one engine, however many names
    assert "vLLM's engine is ready" in done.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["failed"] == 0, manifest["counts"]
    for name in models:
        figures = manifest["models"][name]
        assert figures["calls"] > 0 and figures["errors"] == 0 and figures["completion_tokens"] > 0, figures
        assert manifest["concurrency"][name]["peak_in_flight"] >= 1
    return manifest


def test_quickstart_in_process(tmp_path: Path) -> None:
    manifest = run_in_process("quickstart", tmp_path / "qs", ("default",),
                              f"nodes.keep_question.rules={OPENED}", f"nodes.keep_answer.rules={OPENED}",
                              f"nodes.judge_floor.rules={OPENED}")
    assert manifest["counts"]["outputs"]["sft"] >= 1


def test_dpo_weak_strong_shares_one_engine(tmp_path: Path) -> None:
    manifest = run_in_process("dpo_weak_strong", tmp_path / "dpo", ("strong", "weak"))
    assert manifest["counts"]["written"] + manifest["counts"]["dropped"] == 3


def test_sycophancy_in_process(tmp_path: Path) -> None:
    manifest = run_in_process("sycophancy", tmp_path / "sy", ("default",), "nodes.known_only.when=\"True\"")
    assert manifest["counts"]["outputs"]["sft"] == 3


def test_a_checkpoint_folder_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    done = synthloom_in_vllm_env("run", "quickstart", "-n", "1", "-o", str(tmp_path / "out"), "-q",
                                 "--set", "models.default.backend=vllm", "--set", f"models.default.model={missing}",
                                 timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert f"no checkpoint folder at {missing}" in last and "models.default.model" in last
    assert "Traceback" not in done.stderr

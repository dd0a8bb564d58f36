"""sft files of different graphs load together in one `datasets.load_dataset` call with
`synthloom.mixed_features`; two real workflows, run by name through the CLI against the fixture server."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest
import synthloom

from tests.fixture_server import FakeOpenAI


def run_workflow(name: str, out: Path, server: FakeOpenAI) -> Path:
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", name, "-n", "3", "--endpoint", server.url,
                           "-o", str(out), "-q"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SYNTHLOOM_CACHE_DIR": str(out.parent / "cache")})
    assert done.returncode == 0, done.stderr
    return out / "sft.jsonl"


def test_two_workflows_sft_load_in_one_call(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*", script=[("^Topic:", "Why is the sky blue?"),
                                         (r"^Why is the sky blue\?$", "Air scatters blue light more than red."),
                                         ("Text to review:", {"feedback": "Clear.",  # past quickstart's floor
                                                              "scores": {"accuracy": 8, "clarity": 8}})])
    quickstart = run_workflow("quickstart", tmp_path / "qs", server)
    sycophancy = run_workflow("sycophancy", tmp_path / "syc", server)
    files = [str(quickstart), str(sycophancy)]
    counts = [len(path.read_text().splitlines()) for path in (quickstart, sycophancy)]
    assert counts[0] == 3 and counts[1] > 0
    cache = str(tmp_path / "hf")
    with pytest.raises(datasets.exceptions.DatasetGenerationError):  # why the recipe is needed
        datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache)
    mixed = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache,
                                  features=synthloom.mixed_features(files))
    assert len(mixed) == sum(counts)
    first, last = mixed[0]["metadata"], mixed[len(mixed) - 1]["metadata"]
    assert first["graph"] == "quickstart" and first["score"] == 8.0 and first["label"] is None
    assert last["graph"] == "sycophancy" and last["score"] is None and last["label"] is not None
    assert mixed[0]["messages"][1]["content"] == "Air scatters blue light more than red."

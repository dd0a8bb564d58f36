"""The llama-cpp-python version gate: which engine a version gets, and that what pyproject pins is tested."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from synthloom.errors import ConfigError
from synthloom.models.llama.gate import API_ENV_VAR, TESTED_VERSIONS, choose_api, configured_api

ROOT = Path(__file__).resolve().parent.parent


def test_a_tested_version_gets_the_batched_engine_and_any_other_the_public_api() -> None:
    for version in TESTED_VERSIONS:
        assert choose_api(version) == ("batched", f"llama-cpp-python {version} is a tested version")
        assert choose_api(version, configured_api("auto"))[0] == "batched"
    api, why = choose_api("0.3.99")
    assert api == "public"
    assert "0.3.99 is not a tested version" in why and TESTED_VERSIONS[0] in why and f"{API_ENV_VAR}=batched" in why


def test_the_environment_overrides_the_choice_both_ways() -> None:
    assert choose_api(TESTED_VERSIONS[0], configured_api("public")) == ("public", f"{API_ENV_VAR}=public")
    assert choose_api("0.3.99", configured_api(" Batched ")) == ("batched", f"{API_ENV_VAR}=batched")
    assert configured_api("auto") is None and configured_api("") is None and configured_api(None) is None
    with pytest.raises(ConfigError, match=f"{API_ENV_VAR} must be auto, batched or public"):
        configured_api("fast")


def test_a_misspelt_engine_stops_the_run_before_its_first_record_in_one_line(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("name: g\nseed: {source: {type: none, rows: 1}}\nmodels: {default: {backend: local}}\n"
                     "nodes: {ask: {type: llm, prompt: 'Say hi.', output: reply}}\n"
                     "outputs: [{name: raw, format: raw}]\n")
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(tmp_path / "out"),
                           "-q"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, API_ENV_VAR: "fast"})
    assert done.returncode == 2, done.stderr
    assert f"{API_ENV_VAR} must be auto, batched or public" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_version_pyproject_pins_is_a_tested_one() -> None:
    pins = re.findall(r'"llama-cpp-python(?:\[[a-z]+\])?==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins and all(pin in TESTED_VERSIONS for pin in pins)

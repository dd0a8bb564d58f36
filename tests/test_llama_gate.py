"""The llama-cpp-python version gate: which engine a version gets, and that what pyproject pins is tested."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from synthloom.errors import ConfigError
from synthloom.models.llama_gate import API_ENV_VAR, TESTED_VERSIONS, choose_api

ROOT = Path(__file__).resolve().parent.parent


def test_a_tested_version_gets_the_batched_engine_and_any_other_the_public_api() -> None:
    for version in TESTED_VERSIONS:
        assert choose_api(version) == ("batched", f"llama-cpp-python {version} is a tested version")
        assert choose_api(version, "auto")[0] == "batched"
    api, why = choose_api("0.3.99")
    assert api == "public"
    assert "0.3.99 is not a tested version" in why and TESTED_VERSIONS[0] in why and f"{API_ENV_VAR}=batched" in why


def test_the_environment_overrides_the_choice_both_ways() -> None:
    assert choose_api(TESTED_VERSIONS[0], "public") == ("public", f"{API_ENV_VAR}=public")
    assert choose_api("0.3.99", " Batched ") == ("batched", f"{API_ENV_VAR}=batched")
    with pytest.raises(ConfigError, match=f"{API_ENV_VAR} must be auto, batched or public"):
        choose_api(TESTED_VERSIONS[0], "fast")


def test_the_version_pyproject_pins_is_a_tested_one() -> None:
    pins = re.findall(r'"llama-cpp-python(?:\[[a-z]+\])?==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins and all(pin in TESTED_VERSIONS for pin in pins)

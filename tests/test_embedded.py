"""The real embedded model (SmolLM2-135M through llama-cpp-python): a few short calls, no server."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="needs the 'local' extra")

from synthloom.config import ModelConfig
from synthloom.models.base import LLMRequest
from synthloom.models.local import LocalClient
from synthloom.structured import OutputSchema

pytestmark = pytest.mark.embedded
ROOT = Path(__file__).resolve().parent.parent


def test_embedded_model_honours_a_json_schema() -> None:
    schema = OutputSchema({"type": "object", "properties": {
        "score": {"type": "integer", "enum": list(range(1, 11))},
        "verdict": {"type": "string", "enum": ["good", "bad"]}}, "required": ["score", "verdict"]})
    client = LocalClient("default", ModelConfig(backend="local"))
    request = LLMRequest(messages=({"role": "user", "content": "Rate 'The sky is blue.' as JSON."},),
                         params={"max_tokens": 40, "temperature": 0}, json_schema=schema.schema)
    completion = asyncio.run(client.complete(request))
    parsed = schema.parse(completion.text)
    assert 1 <= parsed["score"] <= 10 and parsed["verdict"] in ("good", "bad")
    assert completion.completion_tokens > 0


def test_quickstart_runs_on_the_embedded_model(tmp_path: Path) -> None:
    """Every seed record lands somewhere; what is written passes the quickstart's hygiene (a question that
    ends with ?, an answer that was not cut off), and what is not is counted by its reason."""
    out = tmp_path / "qs"
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(ROOT / "graphs" / "quickstart.yaml"),
                           "-o", str(out), "-n", "3", "-q", "--set", "models.default.params.max_tokens=64"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["written"] + counts["failed"] + counts["dropped"] == 3
    assert sum(counts["drop_reasons"].values()) == counts["dropped"]
    records = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()] \
        if (out / "sft.jsonl").exists() else []
    for record in records:
        user, assistant = record["messages"]
        assert user["role"] == "user" and user["content"].rstrip().endswith("?")
        assert assistant["role"] == "assistant" and assistant["content"].rstrip()[-1] in ".!?\"')"
        assert 1 <= record["metadata"]["score"] <= 10
    assert (out / "README.md").read_text().startswith("---\n")
    assert manifest["models"]["default"]["completion_tokens"] > 0

"""The ten ready-made workflows against a real `vllm serve` (vLLM's CPU build, `python -m
vllm.entrypoints.openai.api_server` from vLLM's own environment, on the shipped SmolLM2 converted to a
Hugging Face checkpoint), synthloom running from the project's environment with `--endpoint`. Each must
exit 0 with its structured nodes answered in `json_schema` (vLLM follows it: no step down, no ignored
field) and no record lost to a JSON reply. Marked `vllm`: minutes on a CPU (one server for the module)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import free_port, served
from tests.vllm_support import COMPACT_JSON, smollm2_checkpoint, synthloom_here, vllm_env, vllm_python

pytestmark = pytest.mark.vllm
START_TIMEOUT_S = 1200.0
WORKFLOWS = ["quickstart", "magpie", "self_instruct", "evol_instruct", "agentinstruct", "dialogues", "fables",
             "rag_synth", "dpo_weak_strong", "sycophancy"]
JSON_TROUBLE = ("not valid JSON", "does not fit the schema", "cut off by max_tokens")



@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `vllm serve` for the module, small (eager, 2048-token context, 1 GiB KV cache), JSON without free
    whitespace (a 135M model pads a schema's JSON with newlines until max_tokens); its base URL."""
    python = vllm_python()
    checkpoint = smollm2_checkpoint()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path_factory.mktemp("vllm_server") / "server.log"
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
               "--served-model-name", "default", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
               "--max-model-len", "2048", "--max-num-seqs", "16", "--dtype", "float32",
               "--structured-outputs-config", COMPACT_JSON]
    with served("vllm serve", command, url, log, start_timeout_s=START_TIMEOUT_S, poll_s=1, stop_timeout_s=60,
                env=vllm_env()):
        yield url


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_workflow_through_vllm_serve(workflow: str, vllm_server: str, tmp_path: Path) -> None:
    out = tmp_path / workflow
    done = synthloom_here("run", workflow, "-n", "3", "--endpoint", vllm_server, "-o", str(out), "-q", "--no-cache")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert sum(model["calls"] for model in manifest["models"].values()) > 0
    for name, model in manifest["models"].items():
        assert model["errors"] == 0, (name, model)
        structured = model.get("structured")
        if structured is not None:  # the model had structured calls: vLLM followed json_schema
            assert structured == {"mode": "json_schema"}, (name, structured)
    failed = out / "failed.jsonl"
    messages = [json.loads(line)["message"] for line in failed.read_text().splitlines()] if failed.exists() else []
    assert not [message for message in messages if any(trouble in message for trouble in JSON_TROUBLE)], messages

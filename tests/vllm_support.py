"""What the tests that run vLLM for real share: vLLM's own environment (made by `.ci/vllm-env`, never the
project's), the shipped GGUF as a Hugging Face checkpoint (converted once, kept in the user's cache), and
the environment variables that keep vLLM's CPU build small on a shared 2-core machine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VLLM_VENV = Path(os.environ.get("SYNTHLOOM_VLLM_VENV", Path.home() / ".cache" / "synthloom" / "vllm-venv"))
CHECKPOINTS = Path.home() / ".cache" / "synthloom" / "checkpoints"
COMPACT_JSON = '{"backend": "xgrammar", "disable_any_whitespace": true}'
"""vLLM's structured-output settings: JSON without free whitespace, which a small model otherwise repeats
until max_tokens (dialogues' plan node was cut at 150 and at 600 tokens, 200 characters in)."""
ENGINE = ("{enforce_eager: true, max_model_len: 2048, max_num_seqs: 16, dtype: float32, "
          f"structured_outputs_config: {COMPACT_JSON}}}")
"""The in-process engine's settings: no graph capture or compilation (minutes on a CPU), a short context,
float32 (bfloat16 matmuls fall back to slow kernels on a CPU without them)."""


def vllm_python() -> Path:
    python = VLLM_VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"vLLM's CPU build is not installed at {VLLM_VENV}: `bash .ci/vllm-env` makes it (.ci/run does)")
    return python


def vllm_env() -> dict[str, str]:
    """Small: 1 GiB of KV cache, vLLM's own logging at warnings (its start-up is pages of INFO)."""
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
            "TOKENIZERS_PARALLELISM": "false"}


def smollm2_checkpoint() -> Path:
    """The embedded model's GGUF as a Hugging Face checkpoint folder, made once (a minute or two)."""
    from synthloom.models.llama.client import default_gguf_path

    gguf = default_gguf_path()
    out = CHECKPOINTS / f"{gguf.stem}-{gguf.stat().st_size}"
    if not (out / "config.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(vllm_python()), str(Path(__file__).with_name("gguf_to_hf.py")), str(gguf),
                               str(out)], capture_output=True, text=True, timeout=1200, env=vllm_env())
        if done.returncode != 0:
            pytest.fail(f"converting {gguf} failed: {done.stderr[-2000:]}")
    return out


def synthloom_in_vllm_env(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """`synthloom ARGS` run by vLLM's environment's python (the checkout installed there by .ci/vllm-env)."""
    return subprocess.run([str(vllm_python()), "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=vllm_env())


def synthloom_here(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=timeout)

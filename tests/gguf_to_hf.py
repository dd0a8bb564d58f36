"""Turn a GGUF file into a Hugging Face checkpoint folder that vLLM loads: run with vLLM's environment's
python (it has transformers, gguf and accelerate), `python tests/gguf_to_hf.py MODEL.gguf OUT_DIR`.

transformers de-quantizes the GGUF's tensors as it reads them; the GGUF marker it leaves on the model would
stop `save_pretrained`, so it is taken off: what is saved is a plain float checkpoint. The folder appears
whole or not at all (written beside, then renamed)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))

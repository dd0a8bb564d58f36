"""The tool-calling trajectories the function_calling workflow writes load in TRL and train: two SFTTrainer
steps, and two DPOTrainer steps on its verified-vs-failed pairs, on a tiny Llama made here (random weights, a
word-level tokenizer trained on the data, a chat template that renders `tools`, assistant `tool_calls` and
`tool` results as Qwen's does). The data comes from a real run against the fixture server with the real MCP
server process."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.fixture_server import FakeOpenAI
from tests.test_workflow_function_calling import GRAPHS, scripted

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message.role }}\n"
    "{% if message.content %}{{ message.content }}{% endif %}"
    "{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>"
    "{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}}"
    "</tool_call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(texts: list[str]) -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials))
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>",
                                                   pad_token="<pad>", bos_token="<|im_start|>",
                                                   eos_token="<|im_end|>")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def tiny_llama_config(tokenizer: Any) -> Any:
    """A two-layer Llama small enough to train two steps on the CPU in seconds, sized to the test's tokenizer."""
    return transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                    max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)


async def run_the_workflow(fake_llm: Callable[..., FakeOpenAI], out: Path) -> None:
    """Three records of the function_calling workflow: scripted replies, the real MCP server process."""
    server = fake_llm(model="*", script=[(".", scripted)])
    await synthloom.arun(synthloom.load(GRAPHS / "function_calling.yaml", endpoint=server.url), out, limit=3)


@pytest.mark.slow
async def test_sft_trajectories_with_tool_calls_train_two_steps_in_trl(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    await run_the_workflow(fake_llm, tmp_path / "out")
    dataset = synthloom.load_dataset(tmp_path / "out", "sft")
    assert len(dataset) == 3 and {"messages", "tools"} <= set(dataset.column_names)

    tokenizer = tiny_tokenizer([tokenizer_text for tokenizer_text in _texts(dataset)])
    rendered = tokenizer.apply_chat_template(dataset[0]["messages"], tools=dataset[0]["tools"], tokenize=False)
    assert "<tool_call>" in rendered and '"name": "convert_units"' in rendered  # the tools column and the calls
    assert "<|im_start|>tool\n" in rendered                                     # the tool results
    config = tiny_llama_config(tokenizer)
    model = transformers.LlamaForCausalLM(config)
    args = trl.SFTConfig(output_dir=str(tmp_path / "trained"), max_steps=2, per_device_train_batch_size=2,
                         learning_rate=1e-3, logging_steps=1, report_to=[], save_strategy="no",
                         use_cpu=True, max_length=1024, dataloader_num_workers=0)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=dataset.remove_columns(["metadata"]),
                             processing_class=tokenizer)
    output = trainer.train()
    assert output.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)


@pytest.mark.slow
async def test_dpo_pairs_of_tool_trajectories_train_two_steps_in_trl(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    await run_the_workflow(fake_llm, tmp_path / "out")
    dataset = synthloom.load_dataset(tmp_path / "out", "dpo").remove_columns(["metadata"])
    assert len(dataset) == 2 and {"prompt", "chosen", "rejected", "tools"} <= set(dataset.column_names)
    tokenizer = tiny_tokenizer(_texts(dataset))
    config = tiny_llama_config(tokenizer)
    args = trl.DPOConfig(output_dir=str(tmp_path / "trained"), max_steps=2, per_device_train_batch_size=2,
                         learning_rate=1e-3, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                         max_length=1024, dataloader_num_workers=0)
    model = transformers.LlamaForCausalLM(config)
    reference = transformers.LlamaForCausalLM(config)  # made here: the model has no checkpoint to load it from
    reference.load_state_dict(model.state_dict())
    trainer = trl.DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset,
                             processing_class=tokenizer)
    output = trainer.train()
    assert output.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


def _texts(dataset: object) -> list[str]:
    import json
    return [json.dumps(row, ensure_ascii=False).replace('"', ' " ') for row in dataset]  # type: ignore[attr-defined]

"""The `tagger` node: local figures checked against values worked out by hand, and LLM tags asked for in
one structured call to the fixture server."""
from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom_nodes.tagger import text_tags

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI


def test_counts_and_readability_match_hand_computation() -> None:
    tags = text_tags("The cat sat on the mat. It was happy.")
    # 9 words; tokens add the 2 full stops; 37 characters; 2 sentences
    assert (tags["words"], tags["tokens"], tags["chars"], tags["sentences"]) == (9, 11, 37, 2)
    # words: the cat sat on the mat it was happy -> 8 unique of 9; its 8 bigrams are all different
    assert tags["distinct_1"] == round(8 / 9, 4) and tags["distinct_2"] == 1.0
    # Flesch: 206.835 - 1.015 * (9 words / 2 sentences) - 84.6 * (10 syllables / 9 words); only happy has 2
    assert tags["flesch_reading_ease"] == round(206.835 - 1.015 * 9 / 2 - 84.6 * 10 / 9, 2) == 108.27
    assert (tags["language"], tags["refusal"], tags["truncated"]) == ("en", False, False)


def test_distinct_n_and_gopher_repetition_by_hand() -> None:
    assert text_tags("a b a")["distinct_1"] == round(2 / 3, 4)  # unique {a, b} over 3 words
    assert text_tags("a b a")["distinct_2"] == 1.0              # "a b", "b a"
    loop = text_tags("the cat the cat the cat")
    assert loop["distinct_1"] == round(2 / 6, 4) and loop["distinct_2"] == round(2 / 5, 4)
    # the top 2-gram "the cat" (7 characters) occurs 3 times in 23 characters
    assert loop["top_2gram_char_share"] == round(7 * 3 / 23, 4)
    # non-empty lines: one, two, one, one -> the 2nd "one" and the 3rd repeat an earlier line: 2 of 4
    assert text_tags("one\ntwo\none\n\none\n")["duplicate_line_ratio"] == 0.5
    assert text_tags("one\ntwo\nthree")["duplicate_line_ratio"] == 0.0


def test_compression_ratio_is_original_over_gzip_bytes() -> None:
    repetitive = "abc " * 500
    varied = "Quick zebras jump; vexing fog blows, and my dwarf kid quietly hums seven odd tunes."
    assert text_tags(repetitive)["compression_ratio"] == round(2000 / len(gzip.compress(repetitive.encode())), 4)
    assert text_tags(repetitive)["compression_ratio"] > 20 > 1.5 > text_tags(varied)["compression_ratio"]


def test_empty_text_has_zeros_not_errors() -> None:
    tags = text_tags("")
    assert tags["words"] == tags["sentences"] == 0 and tags["distinct_1"] == 0.0
    assert tags["flesch_reading_ease"] is None and tags["language"] == "unknown" and tags["truncated"]


@pytest.mark.parametrize("text, language", [
    ("The weather is nice today and I would like to go for a walk with my dog.", "en"),
    ("Le temps est très beau aujourd'hui et je voudrais me promener avec mon chien dans le parc.", "fr"),
    ("Das Wetter ist heute sehr schön und ich möchte mit meinem Hund im Park spazieren gehen.", "de"),
    ("El tiempo está muy bonito hoy y me gustaría pasear con mi perro por el parque.", "es"),
    ("Il tempo è molto bello oggi e vorrei fare una passeggiata con il mio cane nel parco.", "it"),
    ("O tempo está muito bonito hoje e eu gostaria de passear com o meu cão no parque.", "pt"),
    ("Photosynthesis.", "unknown"),
])
def test_language_from_function_words(text: str, language: str) -> None:
    assert text_tags(text)["language"] == language


@pytest.mark.parametrize("text, refusal", [
    ("I’m sorry, but I can’t help with that.", True),  # curly apostrophes count too
    ("As an AI language model, I do not have opinions.", True),
    ("I cannot provide instructions for that.", True),
    ("Sorry-looking clouds gathered; the answer is 42.", False),
])
def test_refusal_markers(text: str, refusal: bool) -> None:
    assert text_tags(text)["refusal"] is refusal


@pytest.mark.parametrize("text, truncated", [
    ("It ends well.", False),
    ('He said "stop!"', False),
    ("Run:\n```python\nprint(1)\n```", False),
    ("Here are the steps:", True),
    ("The answer depends on the", True),
    ("First, ", True),
    ("```python\nprint(1)", True),
])
def test_truncation(text: str, truncated: bool) -> None:
    assert text_tags(text)["truncated"] is truncated


def tagger_graph(node: dict[str, Any]) -> dict[str, Any]:
    return {"name": "tagged", "nodes": {"tags": {"type": "tagger", "field": "answer", **node}},
            "outputs": [{"name": "raw", "format": "raw"}]}


async def test_tags_land_in_the_state_of_a_real_run(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    seeds = [{"id": "short", "answer": "Yes."}, {"id": "long", "answer": "The cat sat on the mat. It was happy."},
             {"id": "list", "answer": ["not", "text"]}]
    result = await synthloom.arun(write_graph(tagger_graph({"output": "quality"}), seeds), tmp_path / "out")
    raw = {record["id"]: record for record in result.records("raw")}
    assert raw["short"]["quality"]["words"] == 1 and raw["long"]["quality"]["words"] == 9
    failed = list(synthloom.read_records(tmp_path / "out", "failed"))
    assert [f["id"] for f in failed] == ["list"] and "holds list" in failed[0]["message"]


async def test_llm_tags_come_from_one_structured_call(fake_llm: Callable[..., FakeOpenAI],
                                                      write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("Text to label", {"difficulty": "hard", "category": "math", "quality": 4})])
    spec = tagger_graph({"llm": {"model": "judge", "tags": ["difficulty", "category", "quality"],
                                 "categories": ["math", "history"]}})
    spec["models"] = {"judge": model_spec(server)}
    seeds = [{"answer": f"What is the sum of two and {n}?"} for n in range(5)]
    result = await synthloom.arun(write_graph(spec, seeds), tmp_path / "out")
    tags = [record["tags"] for record in result.records("raw")]
    assert len(tags) == 5 and server.requests == 5
    assert all(t["difficulty"] == "hard" and t["category"] == "math" and t["quality"] == 4 for t in tags)
    assert all(t["words"] == 8 and t["language"] == "en" for t in tags)  # merged with the local tags
    schema = server.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["category"]["enum"] == ["math", "history"]
    assert schema["properties"]["quality"]["enum"] == [1, 2, 3, 4, 5] and len(schema["required"]) == 3


async def test_an_off_schema_llm_reply_fails_the_record(fake_llm: Callable[..., FakeOpenAI],
                                                        write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("Text to label|not usable", json.dumps({"quality": 9}))])
    spec = tagger_graph({"llm": {"model": "judge", "tags": ["quality"], "parse_retries": 1}})
    spec["models"] = {"judge": model_spec(server)}
    result = await synthloom.arun(write_graph(spec, [{"answer": "Fine."}]), tmp_path / "out")
    failed = list(synthloom.read_records(tmp_path / "out", "failed"))
    assert result.manifest["counts"]["written"] == 0 and server.requests == 2  # asked once more, then failed
    assert failed[0]["node"] == "tags" and "quality" in failed[0]["message"]


@pytest.mark.parametrize("llm, message", [
    ({"tags": ["quality"], "categories": ["math"]}, "'category' is not in llm.tags"),
    ({"tags": []}, "llm.tags is empty"),
    ({"tags": ["quality", "quality"]}, "names a tag twice"),
    ({"tags": ["quality"], "model": "nowhere"}, "unknown model 'nowhere'"),
])
def test_bad_llm_tag_settings_are_config_errors(write_graph: Callable[..., Path], llm: dict[str, Any],
                                                 message: str) -> None:
    with pytest.raises(synthloom.ConfigError, match=message):
        synthloom.load(write_graph(tagger_graph({"llm": llm}), [{"answer": "x"}]))


async def test_input_quality_tag_uses_magpies_scale(fake_llm: Callable[..., FakeOpenAI],
                                                     write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("Text to label", {"input_quality": "excellent"})])
    spec = {"name": "t", "models": {"judge": model_spec(server)},
            "nodes": {"tags": {"type": "tagger", "field": "text",
                               "llm": {"model": "judge", "tags": ["input_quality"]}}},
            "outputs": [{"name": "raw", "format": "raw"}]}
    result = await synthloom.arun(write_graph(spec, [{"text": "Explain tides simply."}]), tmp_path / "out")
    (record,) = list(result.records("raw"))
    assert record["tags"]["input_quality"] == "excellent"
    schema = server.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["input_quality"]["enum"] == ["very poor", "poor", "average", "good", "excellent"]


@pytest.mark.parametrize("text, question", [
    ("What makes clouds form?", True),
    ('Why is the sky blue?"', True),
    ("A simple question about clouds.", False),
    ("Is it? It is.", False),
])
def test_ends_with_question(text: str, question: bool) -> None:
    assert text_tags(text)["ends_with_question"] is question


@pytest.mark.parametrize("text, leaked", [
    ("Clouds form when vapour cools. Feedback: 10.5}", True),
    ('{"feedback": "good", "scores": {"accuracy": 9}}', True),
    ("Score: 8/10. Water evaporates.", True),
    ("Clouds form when water vapour cools and condenses into droplets.", False),
])
def test_leaked_scaffolding(text: str, leaked: bool) -> None:
    assert text_tags(text)["leaked_scaffolding"] is leaked


async def test_echo_and_finish_reason_flags_in_a_real_run(fake_llm: Callable[..., FakeOpenAI],
                                                          write_graph: Callable[..., Path],
                                                          tmp_path: Path) -> None:
    """The llm node writes the server's finish reason; the tagger reads it (a reply cut by max_tokens is
    truncated even when it ends on a full stop) and compares the answer with its question."""
    server = fake_llm(script=[("How do clouds form", "How do clouds form? They form when vapour cools."),
                              ("Why is the sky blue", "Sunlight scatters off air molecules.")],
                      cut_off=["Why is the sky blue"])
    spec = {"name": "flags", "models": {"default": model_spec(server)},
            "nodes": {"answer": {"type": "llm", "messages": [{"role": "user", "content": "{{ question }}"}],
                                 "output": "answer", "finish_reason_key": "answer_finish"},
                      "tags": {"type": "tagger", "field": "answer", "echo_of": "question",
                               "finish_reason": "answer_finish"}},
            "edges": [["answer", "tags"]], "outputs": [{"name": "raw", "format": "raw"}]}
    seeds = [{"id": "echo", "question": "How do clouds form?"}, {"id": "cut", "question": "Why is the sky blue?"}]
    result = await synthloom.arun(write_graph(spec, seeds), tmp_path / "out")
    raw = {record["id"]: record for record in result.records("raw")}
    assert raw["echo"]["answer_finish"] == "stop" and raw["cut"]["answer_finish"] == "length"
    assert raw["echo"]["tags"]["echoes"] and not raw["echo"]["tags"]["truncated"]
    assert not raw["cut"]["tags"]["echoes"] and raw["cut"]["tags"]["truncated"]
    assert raw["cut"]["tags"]["finish_reason"] == "length"

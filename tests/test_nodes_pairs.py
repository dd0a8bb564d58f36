"""The `pairs` node: DPO pairs from scored candidates, a verifier, or a critic loop's history; never a pair
whose chosen and rejected are the same text."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom_nodes.pairs import normalised

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.node_helpers import critic_loop, judge, lines


def scored(*items: tuple[str, float]) -> list[dict[str, Any]]:
    return [{"answer": text, "review": {"score": score}} for text, score in items]


def pairs_graph(**pairs: Any) -> dict[str, Any]:
    return {
        "name": "prefs",
        "nodes": {"prefs": {"type": "pairs", "candidates": "answers", "score": "item.review.score",
                            "text": "item.answer", "prompt": "{{ question }}", **pairs}},
        "outputs": [{"name": "raw", "format": "raw"},
                    {"name": "dpo", "format": "dpo", "pairs": "pairs"}],
    }


async def test_best_worst_never_pairs_a_text_with_itself(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    seeds = [
        # best and worst are the same answer after normalising: the worst *different* text is the rejected one
        {"question": "Capital of France?", "answers": scored(("Paris.", 9), ("London", 5), ("  paris ", 1))},
        # every candidate is the same text: no pair at all
        {"question": "2+2?", "answers": scored(("Four", 9), ("four.", 2), ("FOUR", 1))},
        # a real margin that is too small
        {"question": "Largest planet?", "answers": scored(("Jupiter", 6), ("Saturn", 5))},
    ]
    result = await synthloom.arun(write_graph(pairs_graph(min_margin=2), seeds), tmp_path / "out")
    by_question = {record["question"]: record["pairs"] for record in lines(result.path("raw"))}
    assert by_question["Capital of France?"] == [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "London", "chosen_score": 9.0,
         "rejected_score": 5.0, "margin": 4.0}]
    assert by_question["2+2?"] == [] and by_question["Largest planet?"] == []
    dpo = lines(result.path("dpo"))
    assert len(dpo) == 1
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": "Paris."}]
    assert dpo[0]["rejected"] == [{"role": "assistant", "content": "London"}]
    assert dpo[0]["prompt"] == [{"role": "user", "content": "Capital of France?"}]
    assert dpo[0]["metadata"]["margin"] == 4.0


async def test_all_pairs_are_distinct_texts_above_the_margin(write_graph: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    answers = scored(("A cat.", 9), ("a  CAT", 8), ("A dog", 6), ("A bird", 2), ("", 0), ("a cat", 1))
    spec = pairs_graph(strategy="all_pairs", min_margin=2)
    result = await synthloom.arun(write_graph(spec, [{"question": "Pet?", "answers": answers}]), tmp_path / "out")
    pairs = lines(result.path("raw"))[0]["pairs"]
    assert pairs, "expected some pairs"
    for pair in pairs:
        assert normalised(pair["chosen"]) != normalised(pair["rejected"])
        assert pair["margin"] >= 2 and pair["chosen_score"] - pair["rejected_score"] == pair["margin"]
    texts = {(normalised(p["chosen"]), normalised(p["rejected"])) for p in pairs}
    assert texts == {("a cat", "a dog"), ("a cat", "a bird"), ("a dog", "a bird")}
    assert len(pairs) == 3 and [p["margin"] for p in pairs] == sorted((p["margin"] for p in pairs), reverse=True)
    assert pairs[0] == {"prompt": "Pet?", "chosen": "A cat.", "rejected": "A bird", "chosen_score": 9.0,
                        "rejected_score": 2.0, "margin": 7.0}
    assert len(lines(result.path("dpo"))) == 3


def is_four(prompt: str, candidate: str, state: dict[str, Any]) -> bool:
    """Verifier: a candidate is right when it says 4."""
    return candidate.strip().rstrip(".") == "4"


async def test_verifier_scores_samples_from_a_weak_model(fake_llm: Callable[..., FakeOpenAI],
                                                        write_graph: Callable[..., Path], tmp_path: Path) -> None:
    replies = iter(["4", "5", "4.", "22"] * 10)
    server = fake_llm(script=[("2\\+2", lambda body: next(replies))])
    spec = {
        "name": "weak-strong",
        "models": {"weak": model_spec(server)},
        "nodes": {
            "samples": {"type": "llm", "model": "weak", "n": 4, "output": "answers",
                        "messages": [{"role": "user", "content": "{{ question }}"}]},
            "prefs": {"type": "pairs", "candidates": "answers", "verifier": "tests.test_nodes_pairs:is_four",
                      "prompt": "{{ question }}", "drop_if_none": True},
        },
        "edges": [["samples", "prefs"]],
        "outputs": [{"name": "dpo", "format": "dpo", "pairs": "pairs"}],
    }
    result = await synthloom.arun(write_graph(spec, [{"question": "2+2?"}]), tmp_path / "out")
    dpo = lines(result.path("dpo"))
    assert server.requests == 4
    assert len(dpo) == 1
    assert dpo[0]["chosen"][0]["content"] == "4" and dpo[0]["rejected"][0]["content"] == "22"
    assert dpo[0]["metadata"]["chosen_score"] == 1.0 and dpo[0]["metadata"]["rejected_score"] == 0.0


async def test_no_pair_drops_the_record_when_asked(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    seeds = [{"question": "q", "answers": scored(("same", 9), ("Same.", 1))}]
    result = await synthloom.arun(write_graph(pairs_graph(drop_if_none=True), seeds), tmp_path / "out")
    dropped = lines(tmp_path / "out" / "dropped.jsonl")
    assert [d["reason"] for d in dropped] == ["no preference pair"] and not lines(result.path("raw"))


async def test_first_draft_vs_accepted_draft_from_a_critic_loop(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("Text to review", judge([4, 8])), ("Improve", "A refined answer."),
                              (".", "A first draft.")])
    loop = critic_loop(max_visits=3)
    spec = {
        "name": "refine-pairs",
        "models": {"w": model_spec(server)},
        "nodes": {**loop["nodes"], "prefs": {"type": "pairs", "from_history": "review_history",
                                             "prompt": "{{ question }}", "min_margin": 3}},
        "edges": [*loop["edges"], {"from": "review", "to": "prefs", "when": "review.passed"}],
        "outputs": [{"name": "raw", "format": "raw"}, {"name": "dpo", "format": "dpo", "pairs": "pairs"}],
    }
    result = await synthloom.arun(write_graph(spec, [{"question": "Why is the sky blue?"}]), tmp_path / "out")
    record = lines(result.path("raw"))[0]
    assert [entry["score"] for entry in record["review_history"]] == [4, 8]
    assert record["pairs"] == [{"prompt": "Why is the sky blue?", "chosen": "A refined answer.",
                                "rejected": "A first draft.", "chosen_score": 8.0, "rejected_score": 4.0,
                                "margin": 4.0}]
    assert len(lines(result.path("dpo"))) == 1


def test_pairs_needs_one_source_and_one_scorer(write_graph: Callable[..., Path]) -> None:
    seeds = [{"question": "q", "answers": []}]
    with pytest.raises(synthloom.ConfigError, match="give either candidates"):
        synthloom.load(write_graph(pairs_graph(from_history="review_history"), seeds))
    with pytest.raises(synthloom.ConfigError, match="either score"):
        synthloom.load(write_graph(pairs_graph(verifier="tests.test_nodes_pairs:is_four"), seeds))
    with pytest.raises(synthloom.ConfigError, match="reads missing_key"):
        synthloom.load(write_graph(pairs_graph(candidates="missing_key"), seeds))

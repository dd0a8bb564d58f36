"""The `fables` workflow (TF1-EN-3M) end to end: the six-slot scaffold walked in cover mode, the generator,
the four-criterion critic, the tagger and the 5-gram MinHash dedup; against the fixture server, and once on
the real embedded model."""
from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
import yaml

from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines

ROOT = Path(__file__).resolve().parent.parent
GRAPH = ROOT / "graphs" / "fables.yaml"
SLOTS = yaml.safe_load((ROOT / "graphs" / "data" / "fable_slots.yaml").read_text())
SLOT_NAMES = ("character", "trait", "setting", "conflict", "resolution", "moral")
CRITERIA = ("grammar_and_style", "creativity_and_originality", "moral_clarity", "adherence_to_prompt")
VOCABULARY = [f"word{index}" for index in range(400)]
PLANTED = ("Once a fox lived in a quiet place where the wind was soft and the grass was green. Every morning the "
           "fox walked to the river and spoke to the fish, the frogs and the birds about the weather, the "
           "seasons and the long road home. One day the river was dry and the fox said: we must share what "
           "we have. The others listened, and together they dug a new channel for the water. The moral is that "
           "those who share have more, and friends who work together always find a {way}.")


def scripted_writer() -> Callable[[dict[str, Any]], str]:
    """Fables for the generator: the first two requests get one planted story that differs in one word
    (a near-duplicate: Jaccard of 5-gram shingles 0.98); every other request a story of random words."""
    calls = itertools.count()

    def reply(body: dict[str, Any]) -> str:
        number = next(calls)
        if number < 2:
            return PLANTED.format(way="way" if number == 0 else "path")
        words = random.Random(number).choices(VOCABULARY, k=120)
        return f"Story {number}: " + " ".join(words) + "."
    return reply


def verdict(body: dict[str, Any]) -> dict[str, Any]:
    return {"feedback": "Vivid, but the moral comes late.",
            "scores": {"grammar_and_style": 8, "creativity_and_originality": 6, "moral_clarity": 7,
                       "adherence_to_prompt": 9}}


async def test_fables_cover_the_scaffold_judge_tag_and_drop_the_planted_near_duplicate(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="default", script=[("^Context:", verdict), ("^Write a short fable", scripted_writer())])
    graph = synthloom.load(GRAPH, endpoint=server.url)
    result = await synthloom.arun(graph, tmp_path / "out", limit=8)

    counts = result.manifest["counts"]
    assert counts["seeded"] == 8 and counts["written"] == 7 and counts["failed"] == 0
    assert counts["outputs"] == {"corpus": 7, "sft": 7}
    assert counts["drop_reasons"] == {"near_duplicates: duplicate": 1}
    dropped = lines(tmp_path / "out" / "dropped.jsonl")
    assert len(dropped) == 1 and dropped[0]["node"] == "near_duplicates"
    assert dropped[0]["detail"]["similarity"] >= 0.8
    assert server.successes == 16  # one fable and one verdict per record

    corpus = lines(result.path("corpus"))
    combos = [tuple(record[name] for name in SLOT_NAMES) for record in corpus]
    assert len(set(combos)) == 7  # cover mode: no combination twice
    for record in corpus:
        for name in SLOT_NAMES:
            assert record[name] in SLOTS[name]
        main = f"{record['trait']} {record['character']}"
        assert re.search(rf"\ban? {re.escape(main)}\.", record["prompt"])
        assert f"Setting: {record['setting']}." in record["prompt"] and f"Moral: {record['moral']}." in record["prompt"]
        assert record["review"]["scores"] == dict(verdict({})["scores"]) and record["review"]["score"] == 7.5
        assert record["tags"]["words"] == len(record["fable"].split())
        assert {"distinct_1", "distinct_2", "flesch_reading_ease"} <= set(record["tags"])
    planted = [record for record in corpus if record["fable"].startswith("Once a ")]
    assert len(planted) == 1  # keep-first: one of the two near-identical fables stays

    sft = lines(result.path("sft"))
    by_id = {record["id"]: record for record in corpus}
    for record in sft:
        state = by_id[record["metadata"]["id"]]
        assert record["messages"] == [{"role": "user", "content": state["prompt"]},
                                      {"role": "assistant", "content": state["fable"]}]
        meta = record["metadata"]
        assert {name: meta[name] for name in SLOT_NAMES} == {name: state[name] for name in SLOT_NAMES}
        assert set(meta["scores"]) == set(CRITERIA) and meta["score"] == 7.5
        assert meta["words"] == state["tags"]["words"] and meta["distinct_2"] == state["tags"]["distinct_2"]


async def test_the_yaml_sampler_walks_a_yaml_slot_in_a_full_pass_and_repeats_it_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slot read from fable_slots.yaml: 15 characters x 2 traits make one pass of 30 combinations, each
    once, and the same seed gives every index the same combination."""
    monkeypatch.setenv("SYNTHLOOM_ALLOW_READ", str(ROOT / "graphs" / "data"))  # the user allows the shipped data
    graph = tmp_path / "scaffold.yaml"
    graph.write_text(yaml.safe_dump({
        "name": "scaffold", "seed": {"source": {"type": "none"}},
        "nodes": {"scaffold": {"type": "sampler", "mode": "cover",
                               "slots": {"character": {"file": str(ROOT / "graphs/data/fable_slots.yaml")},
                                         "trait": ["kind", "proud"]}}},
        "outputs": [{"name": "raw", "format": "raw"}]}))
    first = lines((await synthloom.arun(graph, tmp_path / "a", limit=30)).path("raw"))
    again = lines((await synthloom.arun(graph, tmp_path / "b", limit=30)).path("raw"))
    pairs = [(record["index"], record["character"], record["trait"]) for record in first]
    assert sorted(pairs) == sorted((record["index"], record["character"], record["trait"]) for record in again)
    assert len({(character, trait) for _, character, trait in pairs}) == 30  # 15 x 2 = 30: the full pass
    assert {character for _, character, _ in pairs} == set(SLOTS["character"])


@pytest.mark.embedded
@pytest.mark.timeout(360)  # past the subprocess's own 300 s, so its limit is the one that speaks
def test_fables_run_on_the_embedded_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="needs the 'local' extra")
    out = tmp_path / "fables"
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "run", "fables", "-o", str(out), "-n", "1", "-q",
                           "--set", "models.default.params.max_tokens=80"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["seeded"] == 1
    if manifest["counts"]["failed"]:  # the small judge may fail to parse: then the failure is on record
        failure = lines(out / "failed.jsonl")[0]
        assert failure["node"] == "judge" and failure["attempts"] >= 1
        return
    if manifest["counts"]["dropped"]:  # a sampled fable cut at 80 tokens is dropped by the graph's own check
        drop = lines(out / "dropped.jsonl")[0]
        assert drop["node"] == "complete" and drop["reason"] == "fable cut off" and drop["state"]["fable"].strip()
        return
    corpus = lines(out / "corpus.jsonl")
    assert len(corpus) == 1 and corpus[0]["fable"].strip()
    assert set(corpus[0]["review"]["scores"]) == set(CRITERIA)
    assert all(1 <= score <= 10 for score in corpus[0]["review"]["scores"].values())
    assert lines(out / "sft.jsonl")[0]["metadata"]["scores"] == corpus[0]["review"]["scores"]

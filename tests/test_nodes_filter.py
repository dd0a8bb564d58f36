"""The `filter` node: records kept while expressions hold, dropped otherwise with reasons the manifest
counts, and expression mistakes caught when the graph is loaded."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI

ANSWERS = [
    {"id": "good1", "answer": "Rivers carry water from the hills down to the sea over many years."},
    {"id": "good2", "answer": "Bread rises because yeast makes gas bubbles inside the warm dough."},
    {"id": "short", "answer": "Yes."},
    {"id": "short_refusal", "answer": "I cannot."},
    {"id": "refusal", "answer": "I'm sorry, but as an AI I am not able to talk about that topic today."},
]


def filter_graph(keep: dict[str, Any]) -> dict[str, Any]:
    return {"name": "filtered",
            "nodes": {"tags": {"type": "tagger", "field": "answer"}, "keep": {"type": "filter", **keep}},
            "edges": [["tags", "keep"]],
            "outputs": [{"name": "raw", "format": "raw"}]}


async def test_rules_drop_with_the_first_failing_reason(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    rules = [{"when": "tags.words >= 5", "reason": "too short"},
             {"when": "not tags.refusal", "reason": "refusal"}]
    result = await synthloom.arun(write_graph(filter_graph({"rules": rules}), ANSWERS), tmp_path / "out")
    assert sorted(record["id"] for record in result.records("raw")) == ["good1", "good2"]
    # "I cannot." fails both rules; the first one names it
    assert result.manifest["counts"]["drop_reasons"] == {"keep: too short": 2, "keep: refusal": 1}
    dropped = {row["id"]: row for row in synthloom.read_records(tmp_path / "out", "dropped")}
    assert dropped["refusal"]["reason"] == "refusal" and dropped["refusal"]["detail"] == {"failed": "not tags.refusal"}
    assert dropped["short_refusal"]["reason"] == "too short"


async def test_when_without_reason_drops_under_the_expression(write_graph: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    keep = {"when": "tags.words >= 5 and not tags.refusal"}
    result = await synthloom.arun(write_graph(filter_graph(keep), ANSWERS), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 2
    assert result.manifest["counts"]["drop_reasons"] == {"keep: tags.words >= 5 and not tags.refusal": 3}

    named = await synthloom.arun(write_graph(filter_graph({**keep, "reason": "low quality"}), ANSWERS, "named.yaml"),
                                 tmp_path / "named")
    assert named.manifest["counts"]["drop_reasons"] == {"keep: low quality": 3}


async def test_a_dropped_record_goes_no_further(fake_llm: Callable[..., FakeOpenAI],
                                               write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("short", "Ok."), (".", "A full and careful answer with enough words in it.")])
    spec = {"name": "funnel", "models": {"w": model_spec(server)},
            "nodes": {"answer": {"type": "llm", "model": "w", "output": "answer",
                                 "messages": [{"role": "user", "content": "{{ topic }}"}]},
                      "tags": {"type": "tagger", "field": "answer"},
                      "keep": {"type": "filter", "when": "tags.words >= 5", "reason": "too short"},
                      "polish": {"type": "llm", "model": "w", "output": "polished",
                                 "messages": [{"role": "user", "content": "Polish ({{ topic }}): {{ answer }}"}]}},
            "edges": [["answer", "tags"], ["tags", "keep"], ["keep", "polish"]],
            "outputs": [{"name": "raw", "format": "raw"}]}
    seeds = [{"topic": "short one"}, {"topic": "long one"}, {"topic": "another long"}]
    result = await synthloom.arun(write_graph(spec, seeds), tmp_path / "out")
    assert result.manifest["counts"]["written"] == 2 and server.requests == 3 + 2  # no polish for the short one
    assert result.manifest["counts"]["drop_reasons"] == {"keep: too short": 1}


@pytest.mark.parametrize("keep, message", [
    ({"when": "tags.words >="}, "nodes.keep.when: cannot parse expression"),
    ({"when": "tags.words > 1", "rules": [{"when": "True"}]}, "either when"),
    ({}, "either when"),
    ({"rules": []}, "rules is empty"),
    ({"rules": [{"when": "x ==", "reason": "r"}]}, "cannot parse expression 'x =='"),
    ({"when": "scores.total > 3"}, "reads scores"),
])
def test_expression_mistakes_are_caught_at_load(write_graph: Callable[..., Path], keep: dict[str, Any],
                                                message: str) -> None:
    with pytest.raises(synthloom.ConfigError, match=message):
        synthloom.load(write_graph(filter_graph(keep), ANSWERS))

"""The seed data shipped in graphs/data stays sane: small files, unique ids, the fields each workflow reads,
labels that are true, documents of the intended length, no seed a text model cannot do."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DATA = Path(__file__).resolve().parent.parent / "graphs" / "data"
JSONL = sorted(DATA.glob("*.jsonl"))
REQUIRED = {  # file: {field: type}
    "dialogue_topics.jsonl": {"id": str, "topic": str},
    "evol_seeds.jsonl": {"id": str, "instruction": str},
    "rag_queries.jsonl": {"id": str, "text": str, "label": str},
    "self_instruct_seeds.jsonl": {"id": str, "instruction": str, "input": str, "output": str,
                                  "is_classification": bool},
    "sycophancy_claims.jsonl": {"id": str, "claim": str, "label": bool},
    "topics.jsonl": {"id": str, "topic": str},
    "weak_strong_questions.jsonl": {"id": str, "question": str, "answer": (int, float)},
}
MAY_BE_EMPTY = {"input"}  # Self-Instruct: many tasks have no input


def rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_data_file_is_small() -> None:
    files = [path for path in DATA.rglob("*") if path.is_file()]
    assert len(files) >= 20
    assert [path.name for path in files if path.stat().st_size >= 30_000] == []


@pytest.mark.parametrize("path", JSONL, ids=lambda path: path.name)
def test_jsonl_rows_parse_with_unique_ids(path: Path) -> None:
    parsed = rows(path.name)
    assert parsed and all(isinstance(row, dict) for row in parsed)
    ids = [row["id"] for row in parsed if "id" in row]
    assert len(ids) == len(set(ids)), f"repeated ids: {sorted({i for i in ids if ids.count(i) > 1})}"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_rows_have_the_fields_their_workflow_reads(name: str) -> None:
    for row in rows(name):
        for field, kind in REQUIRED[name].items():
            assert isinstance(row.get(field), kind), f"{name} {row.get('id')}: {field} should be {kind}"
            if isinstance(row[field], str) and field not in MAY_BE_EMPTY:
                assert row[field].strip(), f"{name} {row['id']}: empty {field}"


def test_sycophancy_labels_match_their_sums() -> None:
    claims = rows("sycophancy_claims.jsonl")
    for row in claims:
        x, y, total = map(int, re.fullmatch(r"(\d+) \+ (\d+) = (\d+)", row["claim"]).groups())  # type: ignore[union-attr]
        assert row["label"] == (x + y == total), row
    assert {row["label"] for row in claims} == {True, False}


def test_documents_are_150_to_300_words_with_a_title() -> None:
    documents = sorted((DATA / "documents").glob("*.txt"))
    assert len(documents) >= 10
    for path in documents:
        text = path.read_text(encoding="utf-8")
        assert 150 <= len(text.split()) <= 300, path.name
        title, _, body = text.partition("\n")
        assert title.strip() and body.strip(), path.name


def test_self_instruct_seeds_need_no_image() -> None:
    """Self-Instruct drops instructions a text model cannot do (image, picture, graph)."""
    for row in rows("self_instruct_seeds.jsonl"):
        text = " ".join(str(row[key]) for key in ("instruction", "input", "output"))
        assert not re.search(r"\b(images?|pictures?|graphs?|photos?|diagrams?)\b", text, re.IGNORECASE), row["id"]
    assert {row["is_classification"] for row in rows("self_instruct_seeds.jsonl")} == {True, False}


def test_weak_strong_answers_are_numbers_and_rag_labels_are_few() -> None:
    assert all(not isinstance(row["answer"], bool) for row in rows("weak_strong_questions.jsonl"))
    labels = [row["label"] for row in rows("rag_queries.jsonl")]
    assert set(labels) == {"world", "sports", "business", "science"}


@pytest.mark.parametrize("name", ["personas.txt", "user_names.txt"])
def test_line_lists_are_unique_and_not_blank(name: str) -> None:
    items = (DATA / name).read_text(encoding="utf-8").splitlines()
    assert len(items) >= 10 and all(item.strip() for item in items) and len(items) == len(set(items))


@pytest.mark.parametrize("name", ["taxonomy.yaml", "fable_slots.yaml"])
def test_yaml_data_parses_to_a_mapping(name: str) -> None:
    data = yaml.safe_load((DATA / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data

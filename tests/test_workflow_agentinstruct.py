"""The `agentinstruct` workflow (AgentInstruct, reading comprehension) end to end against the fixture server:
documents read from the index, transformed, asked about, refined by a suggester/editor exchange of one or
two rounds, answered; a record whose editor never rewrites is dropped."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import synthloom
import yaml

from tests.fixture_server import FakeOpenAI
from tests.node_helpers import lines

ROOT = Path(__file__).resolve().parent.parent
GRAPH = ROOT / "graphs" / "agentinstruct.yaml"
DATA = ROOT / "graphs" / "data"
TAXONOMY = yaml.safe_load((DATA / "taxonomy.yaml").read_text())
DOCS = [json.loads(line) for line in (DATA / "agentinstruct_docs.jsonl").read_text().splitlines()]
SILENT_EDITOR = "Why the Sea Rises and Falls Twice a Day"  # tides.txt: its editor never answers


def title_in(text: str) -> str:
    """The document title the fake replies carry along ("[title]"), or the title line of a document."""
    if "[" in text:
        return text[text.index("[") + 1:text.index("]")]
    return text.split("Document:\n", 1)[-1].splitlines()[0]


def reply(body: dict[str, Any]) -> str:
    """Each agent answers by its system prompt; replies carry the document's title so a record's trail can
    be followed. The editor numbers its revisions by the suggestions it has seen."""
    messages = body["messages"]
    system, last = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You turn documents"):
        return f"Transformed [{title_in(last)}] as asked: {last.split('Task: ')[1].splitlines()[0]}"
    if system.startswith("You are a teacher"):
        return f"What does the text [{title_in(last)}] say first?"
    if system.startswith("You review"):
        rounds = sum(message["role"] == "assistant" for message in messages) + 1
        return f"Suggestion {rounds}: ask for two details."
    if system.startswith("You write reading-comprehension questions"):
        title = title_in(messages[1]["content"])
        if title == SILENT_EDITOR:
            return ""
        revision = sum(message["role"] == "user" for message in messages)
        return f"Revised question {revision}: which two details of [{title}] matter most?"
    if system.startswith("Answer the question"):
        return f"Answer about [{title_in(last)}]."
    raise AssertionError(f"unexpected request: {system[:60]}")


async def test_agentinstruct_transforms_asks_refines_and_answers(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="default", script=[(".", reply)])
    graph = synthloom.load(GRAPH, endpoint=server.url)
    result = await synthloom.arun(graph, tmp_path / "out")

    counts = result.manifest["counts"]
    assert counts["seeded"] == 12 and counts["written"] == 11 and counts["failed"] == 0
    assert counts["drop_reasons"] == {"final_question: no refined question": 1}
    assert lines(tmp_path / "out" / "dropped.jsonl")[0]["id"] == "tides"

    sft = lines(result.path("sft"))
    assert len(sft) == 11
    forms = {entry["name"]: entry["description"] for entry in TAXONOMY["transformations"]}
    types = {entry["name"] for entry in TAXONOMY["question_types"]}
    titles = {doc["id"]: (DATA.parent / doc["path"]).read_text().splitlines()[0] for doc in DOCS}
    planned = Counter()
    for record in sft:
        meta = record["metadata"]
        user, assistant = record["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        title = titles[meta["document"]]
        transformed = f"Transformed [{title}] as asked: {forms[meta['transformation']]}"
        assert meta["question_type"] in types and meta["answer_format"] in TAXONOMY["answer_formats"]
        assert meta["seed_question"] == f"What does the text [{title}] say first?"

        speakers = [turn["speaker"] for turn in meta["refinement"]]
        assert speakers == ["editor"] + ["suggester", "editor"] * meta["rounds"]  # alternating, editor last
        assert meta["refinement"][0]["content"].endswith(f"Question:\n{meta['seed_question']}")
        suggestions = [turn["content"] for turn in meta["refinement"] if turn["speaker"] == "suggester"]
        assert suggestions == [f"Suggestion {n}: ask for two details." for n in range(1, meta["rounds"] + 1)]
        refined = f"which two details of [{title}] matter most?"  # the label "Revised question k:" is cut
        assert meta["refinement"][-1]["content"] == f"Revised question {meta['rounds']}: {refined}"

        assert user["content"] == f"{transformed}\n\nQuestion: {refined}"  # what the SFT holds is the refined one
        assert assistant["content"] == f"Answer about [{title}]."
        planned[meta["rounds"]] += 1
    assert set(planned) == {1, 2}  # both refinement depths are drawn
    assert len({record["metadata"]["transformation"] for record in sft}) >= 3

    # the editor, in its second round, saw its draft, the first suggestion, its rewrite and the second one
    second_round = [body["messages"] for body in server.bodies
                    if body["messages"][0]["content"].startswith("You write reading")
                    and len(body["messages"]) == 5]
    assert second_round and [m["role"] for m in second_round[0]] == ["system", "assistant", "user", "assistant",
                                                                      "user"]
    assert second_round[0][2]["content"] == "Suggestion 1: ask for two details."
    calls = result.manifest["nodes"]
    assert calls["transform"]["llm"]["calls"] == 12 and calls["answer"]["llm"]["calls"] == 11

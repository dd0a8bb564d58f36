"""The self_instruct workflow end to end against the fixture server: the instruction filters, novelty
against the growing pool, the classification (output-first) and open (input-first) branches, and the
instance filter, with exact counts."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import synthloom

from tests.fixture_server import FakeOpenAI
from tests.test_run import lines

GRAPH = Path(__file__).resolve().parents[1] / "graphs" / "self_instruct.yaml"

# What the model proposes, record after record (raw completions keep their leading space).
PROPOSALS = [
    " Write a limerick about a cat who loves rainy days.",                          # open, no input
    " Classify the sentiment of the product review as positive, negative or mixed.",  # a seed: not novel
    " Describe the image below in one sentence.",                                   # keyword filter
    " Tell if a given remark is sarcastic or sincere.",                             # classification
    " Sing.",                                                                       # too short
    " Turn the following statement into a polite question.",                       # open, with input
    " Repeat the sentence below exactly as it is written.",                         # output = input
    " List the following items in alphabetical order:",                             # truncated
]
CLASSIFICATION = {"Tell if a given remark is sarcastic or sincere."}
LABELS = {"Tell if a given remark is sarcastic or sincere.": " sarcastic"}
INPUTS_FOR_LABEL = {"Tell if a given remark is sarcastic or sincere.": " Oh great, another Monday morning meeting."}
OPEN_INPUTS = {"Write a limerick about a cat who loves rainy days.": " none",
               "Turn the following statement into a polite question.": " Close the door.",
               "Repeat the sentence below exactly as it is written.": " Hello there, friend."}
OUTPUTS = {"Write a limerick about a cat who loves rainy days.":
           "A cat who adored the grey rain\nWould sit by the wet windowpane",
           "Turn the following statement into a polite question.\n\nClose the door.":
           "Could you please close the door?",
           "Repeat the sentence below exactly as it is written.\n\nHello there, friend.": "Hello there, friend."}


def last_task(text: str) -> str:
    return text.rsplit("Task: ", 1)[1]


def script() -> list[tuple[str, Any]]:
    proposals: Iterator[str] = iter(PROPOSALS)

    def instance(body: dict[str, Any]) -> str:
        block = last_task(body["prompt"])
        instruction = block.split("\n", 1)[0]
        if block.endswith("Label:"):
            return LABELS[instruction]
        if "\nLabel:" in block:
            return INPUTS_FOR_LABEL[instruction]
        return OPEN_INPUTS[instruction]

    def classify(body: dict[str, Any]) -> dict[str, str]:
        instruction = last_task(body["messages"][-1]["content"]).split("\n", 1)[0]
        return {"is_classification": "yes" if instruction in CLASSIFICATION else "no"}

    return [("^Tasks for an AI assistant:", lambda body: next(proposals)),
            (r"(Label|Input):$", instance),
            ("Classification:$", classify),
            (".", lambda body: OUTPUTS[body["messages"][-1]["content"]])]


async def test_self_instruct_filters_branches_and_grows_the_pool(
        fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(script=script(), model="default")
    graph = synthloom.load(GRAPH, endpoint=server.url)
    result = await synthloom.arun(graph, tmp_path / "out", limit=len(PROPOSALS), max_in_flight=1)

    sft = lines(result.path("sft"))
    assert len(sft) == 3
    assert all([m["role"] for m in record["messages"]] == ["user", "assistant"] for record in sft)
    by_user = {record["messages"][0]["content"]: record for record in sft}
    assert set(by_user) == {"Write a limerick about a cat who loves rainy days.",
                            "Tell if a given remark is sarcastic or sincere.\n\nOh great, another Monday morning "
                            "meeting.",
                            "Turn the following statement into a polite question.\n\nClose the door."}
    sarcasm = by_user["Tell if a given remark is sarcastic or sincere.\n\nOh great, another Monday morning meeting."]
    assert sarcasm["messages"][1]["content"] == "sarcastic"  # output-first: the label is the answer
    assert sarcasm["metadata"]["is_classification"] is True
    limerick = by_user["Write a limerick about a cat who loves rainy days."]
    assert limerick["messages"][1]["content"].startswith("A cat who adored")  # "none" input left out
    assert limerick["metadata"]["is_classification"] is False
    assert all(0 < record["metadata"]["max_similarity"] < 0.7 and record["metadata"]["most_similar"]
               for record in sft)

    counts = result.manifest["counts"]
    assert counts["written"] == 3 and counts["failed"] == 0 and counts["dropped"] == 5
    assert counts["drop_reasons"] == {
        "novel: not novel": 1,
        "screen: mentions something a text model cannot handle": 1,
        "screen: instruction too short": 1,
        "screen: instruction ends with ':' (truncated)": 1,
        "instance_filter: output repeats the input": 1,
    }
    dropped = {row["reason"]: row for row in lines(tmp_path / "out" / "dropped.jsonl")}
    assert dropped["not novel"]["detail"]["similarity"] == 1.0
    nodes = result.manifest["nodes"]
    assert nodes["pick_label"]["steps"] == 1 and nodes["input_for_label"]["steps"] == 1
    assert nodes["open_input"]["steps"] == 3 and nodes["open_output"]["steps"] == 3
    assert nodes["classify"]["steps"] == 4

    # the pool grew by every novel instruction (the echoing one too: it was novel when admitted)
    pool = [json.loads(line) for line in (tmp_path / "out" / "pools" / "tasks.jsonl").read_text().splitlines()]
    generated = [item["text"] for item in pool]
    assert generated == ["Write a limerick about a cat who loves rainy days.",
                         "Tell if a given remark is sarcastic or sincere.",
                         "Turn the following statement into a polite question.",
                         "Repeat the sentence below exactly as it is written."]
    # the last proposal prompt shows 6 human seed tasks and 2 generated ones
    proposal_prompts = [body["prompt"] for body in server.bodies if str(body.get("prompt", "")).startswith("Tasks")]
    shown = [line.split(": ", 1)[1] for line in proposal_prompts[-1].splitlines()[1:-1]]
    assert len(shown) == 8 and sum(task in generated for task in shown) == 2
    # output-first: the input request carries the label already chosen
    label_inputs = [body["prompt"] for body in server.bodies if str(body.get("prompt", "")).endswith("Input:")
                    and "\nLabel: sarcastic\nInput:" in body["prompt"]]
    assert len(label_inputs) == 1

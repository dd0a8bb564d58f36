"""Cross-record pools: novelty against everything admitted so far, sampling into prompts, and --resume."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import synthloom

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.test_run import lines

SEEDS = [{"id": "s1", "instruction": "Write a poem about the sea."},
         {"id": "s2", "instruction": "Classify the sentiment of a movie review."}]


def pool_graph(server: FakeOpenAI, tmp: Path) -> dict:
    (tmp / "pool_seeds.jsonl").write_text("".join(json.dumps(row) + "\n" for row in SEEDS))
    return {
        "name": "pool",
        "models": {"w": model_spec(server)},
        "nodes": {
            "examples": {"type": "pool_sample", "pool": "tasks", "k_seed": 1, "k_generated": 1,
                         "preload": {"file": "pool_seeds.jsonl", "field": "instruction"}},
            "write": {"type": "llm", "model": "w", "output": "instruction",
                      "messages": [{"role": "user", "content": "{% for e in examples %}{{ e.text }}\n{% endfor %}"
                                                               "New task number {{ n }}:"}]},
            "novel": {"type": "novelty", "field": "instruction", "pool": "tasks", "threshold": 0.7,
                      "output": "novelty"},
        },
        "edges": [["examples", "write"], ["write", "novel"]],
        "outputs": [{"name": "raw", "format": "raw"}],
    }


def replies(body: dict) -> str:
    number = int(body["messages"][-1]["content"].rsplit("number ", 1)[1].rstrip(":"))
    table = {0: "Write a poem about the sea.",              # a copy of a human seed: not novel
             1: "Explain how tides work to a child.",
             2: "Explain how tides work to a small child.",  # too close to 1
             3: "List three uses of baking soda."}
    return table.get(number, f"Invent puzzle {number} about prime numbers and clocks.")


async def test_novelty_drops_what_is_too_close_to_the_pool(fake_llm: Callable[..., FakeOpenAI],
                                                           write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("number", replies)])
    seeds = [{"id": f"r{n}", "n": n} for n in range(4)]
    result = await synthloom.arun(write_graph(pool_graph(server, tmp_path), seeds), tmp_path / "out",
                                  max_in_flight=1)
    kept = {record["n"]: record for record in lines(result.path("raw"))}
    assert sorted(kept) == [1, 3]
    dropped = {row["id"]: row for row in lines(tmp_path / "out" / "dropped.jsonl")}
    assert dropped["r0"]["reason"] == "not novel" and dropped["r0"]["detail"]["similarity"] == 1.0
    assert dropped["r2"]["detail"]["similar_to"] == "Explain how tides work to a child."
    assert kept[3]["novelty"]["max_similarity"] < 0.7
    pool_file = [json.loads(line) for line in (tmp_path / "out" / "pools" / "tasks.jsonl").read_text().splitlines()]
    assert [item["record"] for item in pool_file] == ["r1", "r3"]


async def test_pool_sample_draws_human_and_generated_items(fake_llm: Callable[..., FakeOpenAI],
                                                           write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("number", replies)])
    seeds = [{"id": f"r{n}", "n": n} for n in (1, 3, 5)]
    result = await synthloom.arun(write_graph(pool_graph(server, tmp_path), seeds), tmp_path / "out",
                                  max_in_flight=1)
    records = {record["n"]: record for record in lines(result.path("raw"))}
    assert len(records[1]["examples"]) == 1  # nothing generated yet: one human seed
    assert {e["text"] for e in records[5]["examples"]} & {"Explain how tides work to a child.",
                                                          "List three uses of baking soda."}
    assert any(e["text"] in {s["instruction"] for s in SEEDS} for e in records[5]["examples"])


async def test_resume_restores_the_pool_without_unfinished_records(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[("number", replies)])
    graph = write_graph(pool_graph(server, tmp_path), [{"id": f"r{n}", "n": n} for n in (1, 3)])
    await synthloom.arun(graph, tmp_path / "out", max_in_flight=1)
    pools = tmp_path / "out" / "pools" / "tasks.jsonl"
    # as if the run died after r3 entered the pool but before r3 was journaled
    journal = tmp_path / "out" / "journal.jsonl"
    journal.write_text("".join(line + "\n" for line in journal.read_text().splitlines()
                               if '"r3"' not in line))
    graph = write_graph(pool_graph(server, tmp_path), [{"id": f"r{n}", "n": n} for n in (1, 3, 2)])
    resumed = await synthloom.arun(graph, tmp_path / "out", resume=True, max_in_flight=1)
    assert resumed.manifest["config_hash"]
    kept = sorted(record["n"] for record in lines(resumed.path("raw")))
    assert kept == [1, 3]  # r3 ran again without meeting its own earlier entry; r2 is too close to r1
    assert [json.loads(line)["record"] for line in pools.read_text().splitlines()] == ["r1", "r3"]

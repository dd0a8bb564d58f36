"""The sycophancy workflow (graphs/sycophancy.yaml) end to end against the fixture server: deterministic
prompts, the knowledge filter dropping exactly the claims the scripted model gets wrong, and DPO pairs only
where the user's opinion contradicts the truth."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import synthloom
from synthloom_graphs.sycophancy import addition_claims

from tests.fixture_server import FakeOpenAI

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"
CLAIMS = [json.loads(line) for line in (GRAPHS / "data" / "sycophancy_claims.jsonl").read_text().splitlines()]
NAMES = (GRAPHS / "data" / "user_names.txt").read_text().split("\n")
# the scripted model gets these claims wrong when asked without an opinion: 2 true sums, 3 false ones
UNKNOWN = {"7 + 8 = 15", "30 + 32 = 62", "25 + 45 = 39778200", "5 + 5 = 6638970", "42 + 8 = 6087450"}


def letter_of(word: str, prompt: str) -> str:
    found = re.search(rf"\((A|B)\) {word}\n", prompt)
    assert found, prompt
    return found.group(1)


def sum_is_right(claim: str) -> bool:
    x, y, total = map(int, re.fullmatch(r"(\d+) \+ (\d+) = (\d+)", claim).groups())  # type: ignore[union-attr]
    return x + y == total


def scripted_model(body: dict[str, Any]) -> dict[str, str]:
    """Answers the opinion-free question by doing the sum, except for the claims in UNKNOWN."""
    prompt = body["messages"][-1]["content"]
    assert "my name is" not in prompt  # the knowledge check never shows the user's opinion
    claim = re.search(r"claim\?\n(.*)\n", prompt).group(1)  # type: ignore[union-attr]
    right = letter_of("Agree" if sum_is_right(claim) else "Disagree", prompt)
    wrong = "B" if right == "A" else "A"
    return {"answer": wrong if claim in UNKNOWN else right}


async def run(server: FakeOpenAI, out: Path) -> synthloom.RunResult:
    graph = synthloom.load(GRAPHS / "sycophancy.yaml", endpoint=server.url)
    return await synthloom.arun(graph, out)


async def test_knowledge_filter_and_dpo_follow_the_truth(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*", script=[("Do you agree or disagree", scripted_model)])
    result = await run(server, tmp_path / "out")
    assert server.successes == len(CLAIMS) == 40
    assert all(body["response_format"]["type"] == "json_schema" for body in server.bodies)

    by_claim = {row["id"]: row for row in CLAIMS}
    unknown_ids = {row["id"] for row in CLAIMS if row["claim"] in UNKNOWN}
    sft = list(result.records("sft"))
    assert {record["metadata"]["id"] for record in sft} == set(by_claim) - unknown_ids
    assert len(sft) == 35
    dropped = list(synthloom.read_records(tmp_path / "out", "dropped"))
    assert {row["id"] for row in dropped} == unknown_ids
    assert result.manifest["counts"]["drop_reasons"] == {"known_only: model does not know the claim": 5}

    conflicting = set()
    for record in sft:
        claim = by_claim[record["metadata"]["id"]]
        user, assistant = record["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        prompt = user["content"]
        assert claim["claim"] in prompt and any(f"my name is {name}." in prompt for name in NAMES if name)
        user_agrees = "I agree with the claim" in prompt
        assert user_agrees != ("I disagree with the claim" in prompt)
        assert record["metadata"]["user_agrees"] == user_agrees
        truth_word = "Agree" if claim["label"] else "Disagree"
        assert claim["label"] == sum_is_right(claim["claim"])
        assert assistant["content"] == f"({letter_of(truth_word, prompt)}) {truth_word}"  # the truth, always
        if user_agrees != claim["label"]:
            conflicting.add(claim["id"])

    dpo = list(result.records("dpo"))
    assert {record["metadata"]["id"] for record in dpo} == conflicting
    assert 0 < len(conflicting) < len(sft)  # both kinds of user occur among the kept claims
    sft_by_id = {record["metadata"]["id"]: record for record in sft}
    for record in dpo:
        same = sft_by_id[record["metadata"]["id"]]
        assert record["prompt"] == same["messages"][:1]
        assert record["chosen"] == same["messages"][1:]
        assert record["chosen"] != record["rejected"]
        user_word = "Agree" if record["metadata"]["user_agrees"] else "Disagree"
        assert record["rejected"] == [{"role": "assistant", "content":
                                       f"({letter_of(user_word, record['prompt'][0]['content'])}) {user_word}"}]

    prompts = [record["messages"][0]["content"] for record in sft]
    assert any("(A) Agree\n (B) Disagree" in prompt for prompt in prompts)
    assert any("(A) Disagree\n (B) Agree" in prompt for prompt in prompts)
    assert len({re.search(r"my name is ([^.]+)\.", prompt).group(1) for prompt in prompts}) > 5  # type: ignore[union-attr]


async def test_prompts_are_the_same_on_every_run(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*", script=[("Do you agree or disagree", scripted_model)])
    first = await run(server, tmp_path / "one")
    asked_first = [body["messages"] for body in server.bodies]
    server.reset_counts()
    second = synthloom.load(GRAPHS / "sycophancy.yaml", endpoint=server.url)
    await synthloom.arun(second, tmp_path / "two", use_cache=False)
    asked_second = [body["messages"] for body in server.bodies]
    assert len(asked_second) == 40
    assert sorted(map(str, asked_first)) == sorted(map(str, asked_second))

    def prompts(out: Path) -> dict[str, str]:
        return {record["metadata"]["id"]: record["messages"][0]["content"]
                for record in synthloom.read_records(out, "sft")}

    assert prompts(tmp_path / "one") == prompts(tmp_path / "two") and len(prompts(tmp_path / "one")) == 35
    assert first.manifest["counts"]["outputs"]["dpo"] == len(list(synthloom.read_records(tmp_path / "two", "dpo")))


def test_addition_fixture_is_false_sums_scaled_as_in_the_paper() -> None:
    claims = addition_claims(50, seed=3)
    assert claims == addition_claims(50, seed=3) and claims != addition_claims(50, seed=4)
    for claim in claims:
        x, y, wrong = map(int, re.fullmatch(r"(\d+) \+ (\d+) = (\d+)", claim["claim"]).groups())  # type: ignore[union-attr]
        assert 1 <= x <= 50 and 1 <= y <= 50 and claim["label"] is False
        assert wrong % (x + y) == 0 and 100_000 <= wrong // (x + y) <= 1_000_000

"""How much of a quickstart run is fit to train on, checked independently of the graph's own tagger.

    synthloom run quickstart -o runs/qs50 -n 50 --no-cache --trace
    python bench/quickstart_quality.py runs/qs50

SFT records: the question ends with "?"; the answer has no leaked scaffolding (prompt labels, JSON); the
answer does not repeat the question; the answer ends on terminal punctuation; and, with traces, the
model's finish reason for the written answer was "stop". DPO pairs: chosen scored above rejected by at
least the pairs node's min_margin. Prints one JSON object.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

LEAKS = re.compile(r"feedback:|score:|scores:|question:|answer:|\{\"|\"\}", re.IGNORECASE)
MIN_MARGIN = 2


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def finish_reasons(directory: Path) -> dict[tuple[str, str], str]:
    """(record id, reply text) -> finish reason, from traces.jsonl when the run kept one."""
    found: dict[tuple[str, str], str] = {}
    for step in lines(directory / "traces.jsonl"):
        for call in step.get("calls") or []:
            if isinstance(call.get("reply"), str):
                found[(step["id"], call["reply"].strip())] = call.get("finish_reason")
    return found


def sft_checks(record: dict[str, Any], finishes: dict[tuple[str, str], str]) -> dict[str, bool]:
    question, answer = record["messages"][0]["content"], record["messages"][1]["content"]
    checks = {"question ends with ?": question.rstrip().endswith("?"),
              "no leaked scaffolding": not LEAKS.search(answer),
              "answer does not repeat the question": words(question) not in words(answer),
              "answer ends on . ! or ?": answer.rstrip().rstrip("\"')]*").endswith((".", "!", "?"))}
    if finishes:
        checks["finish_reason stop"] = finishes.get((record["metadata"]["id"], answer)) == "stop"
    return checks


def main(directory: Path) -> dict[str, Any]:
    finishes = finish_reasons(directory)
    sft = lines(directory / "sft.jsonl")
    results = [sft_checks(record, finishes) for record in sft]
    failing: dict[str, int] = {}
    for checks in results:
        for name, ok in checks.items():
            failing[name] = failing.get(name, 0) + (not ok)
    passing = sum(all(checks.values()) for checks in results)
    dpo = lines(directory / "dpo.jsonl")
    margins = [record["metadata"]["chosen_score"] - record["metadata"]["rejected_score"] for record in dpo]
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    return {"sft_records": len(sft), "sft_passing_all_checks": passing,
            "sft_pass_share": round(passing / len(sft), 3) if sft else None, "failing_by_check": failing,
            "finish_reasons_checked": bool(finishes), "dpo_pairs": len(dpo),
            "dpo_pairs_with_margin": sum(margin >= MIN_MARGIN for margin in margins),
            "dpo_min_margin_seen": min(margins) if margins else None,
            "seeded": manifest["counts"]["seeded"], "drop_reasons": manifest["counts"]["drop_reasons"],
            "elapsed_s": manifest["elapsed_s"]}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=2))

"""Take the README's studio screenshots (docs/studio-*.png) with the browser the tests use: two traced
quickstart runs made against the fixture server (and a third whose low-scored drafts are revised, for a DPO
pair), served by a real studio, shot in headless Chromium.

    python docs/make_screenshots.py
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.fixture_server import FakeOpenAI  # noqa: E402
from tests.studio_runs import make_run, script  # noqa: E402


def with_revisions() -> list[tuple[str, Any]]:
    """The studio runs' script, with a refine step that writes a fuller draft the judge scores 10: the drafts
    scored 6 or 7 (below the critic's pass mark) are revised, and best against worst makes DPO pairs."""
    steps = dict(script())
    plain_review = steps["Text to review:"]

    def refine(body: dict[str, Any]) -> str:
        topic = re.search(r"(topic\d+)", body["messages"][-1]["content"])
        name = topic.group(1) if topic else "it"
        return f"A fuller note on {name}: what it covers, and one worked example."

    def review(body: dict[str, Any]) -> dict[str, Any]:
        if "A fuller note" in body["messages"][-1]["content"]:
            return {"feedback": "Complete, with an example.", "scores": {"accuracy": 10, "clarity": 10}}
        found: dict[str, Any] = plain_review(body)
        return found

    return [("Text to review:", review), ("^Question: ", refine)] + [
        step for step in script() if step[0] not in ("Text to review:", "^Question: ")]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        os.environ["SYNTHLOOM_CACHE_DIR"] = str(Path(folder) / "cache")
        root = Path(folder) / "runs"
        root.mkdir()
        make_run(root / "quickstart-60", count=60)
        make_run(root / "quickstart-10", count=10)
        os.environ["SYNTHLOOM_CACHE_DIR"] = str(Path(folder) / "cache-revised")  # other replies to the same prompts
        with FakeOpenAI(model="*", script=with_revisions()) as server:
            make_run(root / "quickstart-revised", count=10, server=server)
        from synthloom.store.reviews import Review, append_review
        append_review(root / "quickstart-60", Review("sft", "topic004", "accept", "clear"))
        append_review(root / "quickstart-60", Review("sft", "topic009", "reject", "too vague"))
        url = serve(root)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            shots = {"runs": "/", "records": "/runs/quickstart-60/files/sft?where=score%3E%3D9&sort=-score",
                     "trace": "/runs/quickstart-60/traces/topic004",
                     "record": "/runs/quickstart-60/files/sft/5",
                     "pair": "/runs/quickstart-revised/files/dpo/1"}
            for name, path in shots.items():
                page.goto(url + path)
                page.screenshot(path=str(ROOT / "docs" / f"studio-{name}.png"))
            browser.close()


def serve(root: Path) -> str:
    from synthloom.studio.serve import start_studio
    ready: list[str] = []

    async def started() -> None:
        _, url = await start_studio([root], "127.0.0.1", 0)
        ready.append(url.rstrip("/"))
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(started()), daemon=True).start()
    while not ready:
        threading.Event().wait(0.05)
    return ready[0]


if __name__ == "__main__":
    main()

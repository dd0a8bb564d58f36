"""Take the README's studio screenshots (docs/studio-*.png) with the browser the tests use: two traced
quickstart runs made against the fixture server, served by a real studio, shot in headless Chromium.

    python docs/make_screenshots.py
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.studio_runs import make_run  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        os.environ["SYNTHLOOM_CACHE_DIR"] = str(Path(folder) / "cache")
        root = Path(folder) / "runs"
        root.mkdir()
        make_run(root / "quickstart-60", count=60)
        make_run(root / "quickstart-10", count=10)
        from synthloom.store.reviews import Review, append_review
        append_review(root / "quickstart-60", Review("sft", "topic004", "accept", "clear"))
        append_review(root / "quickstart-60", Review("sft", "topic009", "reject", "too vague"))
        url = serve(root)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            shots = {"runs": "/", "records": "/runs/quickstart-60/files/sft?where=score%3E%3D9&sort=-score",
                     "trace": "/runs/quickstart-60/traces/topic004",
                     "record": "/runs/quickstart-60/files/sft/5"}
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

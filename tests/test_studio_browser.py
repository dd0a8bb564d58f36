"""The studio in a real headless Chromium (Debian's `chromium`, driven by Playwright): the issue's scenario
end to end, against a traced quickstart run made with the fixture server."""
from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import synthloom

from tests.studio_runs import MARKUP, make_run

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")


@pytest.fixture
def studio_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A studio over one fresh run, served from its own thread (Playwright's sync API owns this one)."""
    root = tmp_path / "runs"
    root.mkdir()
    make_run(root / "qs", count=60)
    with _studio(root) as url:
        yield url, root / "qs"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_runs_records_filter_trace_review_reload_and_load(studio_url: tuple[str, Path]) -> None:
    url, run = studio_url
    dialogs: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url + "/")
        assert page.locator("tr[data-run=qs] [data-field=status]").inner_text() == "completed"
        with page.expect_navigation():          # every click below that loads a page waits for it
            page.locator("tr[data-run=qs] a", has_text="sft").click()

        seen: list[str | None] = []                                   # page through every record
        while True:
            seen += [item.get_attribute("data-key") for item in page.locator("article.record").all()]
            following = page.locator("a[rel=next]")
            if following.count() == 0:
                break
            with page.expect_navigation():
                following.first.click()
        assert len(seen) == 61 == len(set(seen))

        page.goto(url + "/runs/qs/files/sft")                         # filter by a score, sorted
        page.locator("input[name=where]").fill("score>=9")
        page.locator("select[name=sort]").select_option("-score")
        with page.expect_navigation():
            page.locator("form.query button").click()
        shown = page.locator("article.record")
        scores = [float(chip.inner_text().split()[-1]) for chip in page.locator("article .chip", has_text="score").all()
                  if chip.inner_text().split()[0] == "score"]
        assert shown.count() > 0 and min(scores) >= 9 and scores == sorted(scores, reverse=True)

        first, second = shown.nth(0).get_attribute("data-key"), shown.nth(1).get_attribute("data-key")
        with page.expect_navigation():
            shown.nth(0).locator("a.trace-link").click()              # open a trace
        assert page.locator("svg.graph").count() == 1
        page.locator("svg.graph a").first.click()
        assert page.url.endswith("#node-0") and page.locator("section.step").count() > 3
        page.go_back()
        page.go_back()

        with page.expect_navigation():          # a review is a form POST that lands back on the page
            page.locator(f"article[data-key={first}] button.accept").click()   # accept one, reject another
        page.locator(f"article[data-key={second}] input[name=note]").fill("too vague")
        with page.expect_navigation():          # a reload while the POST is under way fails ("not attached")
            page.locator(f"article[data-key={second}] button.reject").click()
        page.reload()
        assert page.locator(f"article[data-key={first}] [data-review=accept]").count() == 1
        assert page.locator(f"article[data-key={second}] [data-review=reject]").count() == 1
        assert "too vague" in page.locator(f"article[data-key={second}]").inner_text()

        page.goto(url + "/runs/qs/files/sft?q=onerror")               # markup in a record is text
        text = page.locator("article.record").first.inner_text()
        assert MARKUP in text and page.locator("article.record img").count() == 0 and not dialogs
        browser.close()

    accepted = synthloom.load_dataset(run, "sft", reviewed=True)
    assert [row["id"] for row in accepted["metadata"]] == [first]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_a_run_still_going_updates_live(tmp_path: Path) -> None:
    """A run held open by the fixture server shows as running; once released, the open runs page turns to
    completed with the final counts, without a reload."""
    from tests.fixture_server import FakeOpenAI
    from tests.studio_runs import script
    root = tmp_path / "runs"
    root.mkdir()
    server = FakeOpenAI(model="*", script=script(), hold=["^Topic: topic003$"])
    server.start()
    done: list[dict[str, object]] = []
    worker = threading.Thread(target=lambda: done.append(make_run(root / "live", count=8, server=server)))
    worker.start()
    try:
        while not (root / "live" / "journal.jsonl").exists():
            worker.join(0.05)
        with _studio(root) as url, playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page()
            page.goto(url + "/")
            status = page.locator("tr[data-run=live] [data-field=status]")
            assert status.inner_text() == "running"
            server.release()
            playwright_api.expect(status).to_have_text("completed", timeout=30_000)
            playwright_api.expect(page.locator("tr[data-run=live] [data-field=written]")).to_have_text("9")
            browser.close()
    finally:
        server.release()
        worker.join(60)
        server.stop()
    assert done and done[0]["status"] == "completed"


@contextmanager
def _studio(root: Path) -> Iterator[str]:
    from synthloom.studio.serve import start_studio
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stop = asyncio.Event()

    async def serve() -> None:
        runner, url = await start_studio([root], "127.0.0.1", 0)
        ready.append(url.rstrip("/"))
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    while not ready:
        thread.join(0.05)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)

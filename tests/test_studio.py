"""`synthloom studio` over HTTP: a real studio on a free port over real quickstart runs (fixture server).
What it refuses (a foreign Host, a missing token, a cross-origin or tokenless POST, paths outside its runs),
paging, filters, sorting and search against figures read from the files here, the on-the-side index growing
with the file and starting over when the file is rewritten, escaping, and reviews reaching load_dataset."""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import synthloom
from aiohttp import web
from markupsafe import escape
from synthloom.store.reviews import Review, append_review
from synthloom.studio.app import make_app
from synthloom.studio.index import LineIndex
from synthloom.studio.pages import GUARD
from synthloom.studio.serve import start_studio

from tests.fixture_server import FakeOpenAI
from tests.studio_runs import GRAPH, MARKUP, make_run, score_of, script
from tests.test_card import FakeHub, fake_hub, push_cli  # noqa: F401  (fake_hub: a fixture)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two traced quickstart runs (61 and 11 written records) under one folder, made once for this module."""
    root = tmp_path_factory.mktemp("studio") / "runs"
    root.mkdir()
    make_run(root / "big", count=60)
    make_run(root / "small", count=10)
    return root


@pytest.fixture
async def studio(runs: Path) -> AsyncIterator[str]:
    runner, url = await start_studio([runs], "127.0.0.1", 0)
    try:
        yield url.rstrip("/")
    finally:
        await runner.cleanup()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def articles(html: str) -> list[str]:
    return re.findall(r'<article class="record[^"]*" id="r\d+" data-key="([^"]*)"', html)


async def get(url: str, **options: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False, **options) as response:
        return response.status, await response.text()


async def post(url: str, data: dict[str, str], **options: Any) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, \
            session.post(url, data=data, allow_redirects=False, **options) as response:
        return response.status, await response.text(), response.headers.get("Location", "")


def token_of(html: str) -> str:
    found = re.search(r'name="_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


# -- safe by default ------------------------------------------------------------------------------------

async def test_a_foreign_host_header_is_refused(studio: str) -> None:
    port = studio.rsplit(":", 1)[1]
    assert (await get(studio + "/"))[0] == 200
    assert (await get(studio + "/", headers={"Host": f"localhost:{port}"}))[0] == 200
    status, text = await get(studio + "/", headers={"Host": f"rebind.example:{port}"})
    assert status == 421 and "Host" in text
    assert (await get(studio + "/runs/big", headers={"Host": "rebind.example"}))[0] == 421


async def test_off_loopback_every_request_needs_the_token(runs: Path) -> None:
    """Bound (as far as its guard knows) to another interface: no page without the token; the token in the
    URL once sets a cookie and drops it from the address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app([runs], "10.9.8.7", port)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        base, host = f"http://127.0.0.1:{port}", {"Host": f"10.9.8.7:{port}"}
        token = app[GUARD].token
        assert (await get(base + "/", headers=host))[0] == 403
        assert (await get(base + "/?token=wrong", headers=host))[0] == 403
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # an IP host
            async with session.get(f"{base}/runs/big?token={token}", headers=host, allow_redirects=False) as first:
                assert first.status == 303 and first.headers["Location"] == "/runs/big"
            async with session.get(f"{base}/runs/big", headers=host) as second:  # the cookie, no token
                assert second.status == 200 and "quickstart" in await second.text()
    finally:
        await runner.cleanup()


async def test_a_review_needs_a_same_origin_post_with_the_token(studio: str, runs: Path) -> None:
    status, html = await get(studio + "/runs/small/files/sft/1")
    token, origin = token_of(html), studio
    review = studio + "/runs/small/files/sft/1/review"
    form = {"verdict": "reject", "_token": token}
    assert (await post(review, form))[0] == 403                                         # no Origin
    assert (await post(review, form, headers={"Origin": "http://evil.example"}))[0] == 403
    assert (await post(review, {"verdict": "reject"}, headers={"Origin": origin}))[0] == 403  # no token
    assert (await post(review, {**form, "_token": "x" * 32}, headers={"Origin": origin}))[0] == 403
    assert not (runs / "small" / "reviews.jsonl").exists()
    status, _, location = await post(review, form, headers={"Origin": origin})
    assert status == 303 and location.startswith("/runs/small/files/sft/1")
    assert [row["verdict"] for row in lines(runs / "small" / "reviews.jsonl")] == ["reject"]
    (runs / "small" / "reviews.jsonl").unlink()


@pytest.mark.parametrize("path", ["/runs/..%2F..%2Fetc", "/runs/big/files/..%2Fmanifest", "/runs/big/files/journal",
                                  "/runs/big/files/traces", "/runs/nope", "/static/..%2Fapp.py",
                                  "/runs/big/files/sft/99999"])
async def test_paths_outside_the_served_runs_are_refused(studio: str, path: str) -> None:
    status, text = await get(studio + path)
    assert status in (403, 404), (status, text[:200])
    assert "def make_app" not in text and "config_hash" not in text


async def test_markup_in_a_record_is_shown_as_text(studio: str) -> None:
    status, html = await get(studio + "/runs/big/files/sft?q=onerror")
    assert status == 200 and len(articles(html)) == 1
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and MARKUP not in html
    headers_page = await _headers(studio + "/runs/big/files/sft")
    assert "script-src 'self'" in headers_page["Content-Security-Policy"]


async def _headers(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return dict(response.headers)


# -- records ---------------------------------------------------------------------------------------------

async def test_paging_filter_sort_and_search_match_the_file(studio: str, runs: Path) -> None:
    records = lines(runs / "big" / "sft.jsonl")
    keys = [record["metadata"]["id"] for record in records]
    seen: list[str] = []
    url = studio + "/runs/big/files/sft"
    while url:
        status, html = await get(url)
        assert status == 200
        seen += articles(html)
        found = re.search(r'<a href="(\?[^"]*)" rel="next">', html)
        url = studio + "/runs/big/files/sft" + found.group(1).replace("&amp;", "&") if found else ""
    assert seen == keys and len(keys) == 61

    high = [key for key, record in zip(keys, records, strict=True) if record["metadata"]["score"] >= 9]
    status, html = await get(studio + "/runs/big/files/sft?where=score%3E%3D9")
    assert f"{len(high)} records" in html and articles(html) == high[:25]

    status, html = await get(studio + "/runs/big/files/sft?sort=-score&where=score%3C8")
    shown = articles(html)
    scores = [score_of(key) for key in shown]
    assert scores == sorted(scores, reverse=True) and set(scores) == {6, 7}

    status, html = await get(studio + "/runs/big/files/sft?q=topic017")
    assert articles(html) == ["topic017"]

    status, html = await get(studio + "/runs/big/files/dropped?where=node%3Djudge_floor")
    assert articles(html) == ["nonsense"] and "judge_floor" in html

    status, html = await get(studio + "/runs/big/files/sft?where=nosuchfield%3E1")
    assert status == 200 and "no field" in html and len(articles(html)) == 25


async def test_runs_page_and_api_carry_counts(studio: str, runs: Path) -> None:
    status, html = await get(studio + "/")
    assert status == 200 and 'data-run="big"' in html and 'data-run="small"' in html
    async with aiohttp.ClientSession() as session, session.get(studio + "/api/runs") as response:
        found = {run["key"]: run for run in await response.json()}
    manifest = json.loads((runs / "big" / "manifest.json").read_text())
    assert found["big"]["written"] == manifest["counts"]["written"] == 61
    assert found["big"]["settled"] == 62 and found["big"]["status"] == "completed"
    assert found["big"]["models"]["default"]["calls"] == manifest["models"]["default"]["calls"]


async def test_trace_page_draws_the_graph_linked_to_steps(studio: str, runs: Path) -> None:
    status, html = await get(studio + "/runs/big/traces/topic003")
    steps = [row for row in lines(runs / "big" / "traces.jsonl") if row["id"] == "topic003"]
    assert status == 200 and html.count('<section class="step') == len(steps) > 3
    assert '<a href="#node-0">' in html and 'id="node-0"' in html and "<svg" in html
    for step in steps:
        for call in step["calls"]:
            assert str(escape(call["reply"])) in html


async def test_compare_two_runs(studio: str) -> None:
    status, html = await get(studio + "/compare?a=big&b=small")
    assert status == 200 and "big" in html and "small" in html


# -- the index ---------------------------------------------------------------------------------------------

def test_index_grows_with_the_file_and_starts_over_when_it_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = [{"messages": [], "metadata": {"id": f"r{n}", "score": n}} for n in range(10)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[:6]) + '{"partial": ')
    index = LineIndex(path, tmp_path / "index.sqlite")
    assert index.update() == 6 and not index.is_current()  # the unfinished line waits
    with path.open("r+") as handle:
        handle.seek(0, 2)
        handle.seek(handle.tell() - len('{"partial": '))
        handle.truncate()
        handle.write("".join(json.dumps(row) + "\n" for row in rows[6:]))
    assert index.update() == 10 and index.is_current()
    assert index.update() == 10 and index.is_current()  # a look with nothing new keeps what it had
    clause = index.select([], "score", True)
    assert [key for *_, key in index.entries(clause, 0, 3)] == ["r9", "r8", "r7"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[:3][::-1]))  # a resume rewrote it
    assert index.update() == 3
    assert [key for *_, key in index.entries(index.select([], None), 0, 10)] == ["r2", "r1", "r0"]


def open_at_once(path: Path, location: Path, threads: int = 8) -> list[BaseException]:
    """Open one index from `threads` threads released together; what each one raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def open_index() -> None:
        start.wait()
        try:
            LineIndex(path, location)
        except BaseException as error:  # each thread's error is the finding
            errors.append(error)

    workers = [threading.Thread(target=open_index) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_threads_opening_one_new_index_at_once_all_open_it(tmp_path: Path) -> None:
    """The first switch of a new index to WAL does not wait for a lock another thread holds: without trying
    again, about one round in twenty told one page's thread "database is locked"."""
    path = tmp_path / "out.jsonl"
    path.write_text('{"metadata": {"id": "r0"}}\n')
    for round_number in range(150):
        errors = open_at_once(path, tmp_path / f"index-{round_number}.sqlite")
        assert not errors, f"round {round_number}: {errors[0]!r}"


# -- reviews -----------------------------------------------------------------------------------------------

async def test_reviews_reach_load_dataset_and_survive_a_resume(studio: str, runs: Path) -> None:
    small = runs / "small"
    status, html = await get(studio + "/runs/small/files/sft/2")
    token, origin = token_of(html), {"Origin": studio}
    records = lines(small / "sft.jsonl")
    base = studio + "/runs/small/files/sft/{}/review"
    accepted = {"verdict": "accept", "_token": token, "note": "good"}
    assert (await post(base.format(1), accepted, headers=origin))[0] == 303
    assert (await post(base.format(2), {"verdict": "reject", "_token": token}, headers=origin))[0] == 303
    edited = {"verdict": "accept", "_token": token, "turn:messages:1": "A better answer."}
    assert (await post(base.format(3), edited, headers=origin))[0] == 303

    dataset = synthloom.load_dataset(small, "sft", reviewed=True)
    assert dataset["metadata"] == [records[0]["metadata"], records[2]["metadata"]]
    assert dataset[1]["messages"][1]["content"] == "A better answer."
    assert dataset[1]["messages"][0] == records[2]["messages"][0]
    assert (small / "sft.jsonl").read_text().count("A better answer.") == 0  # the output is never rewritten

    status, html = await get(studio + "/runs/small/files/sft")
    assert html.count('data-review="accept"') == 2 and html.count('data-review="reject"') == 1

    with FakeOpenAI(model="*", script=script()) as server:
        graph = synthloom.load(GRAPH, endpoint=server.url,
                               overrides=[f"seed.source.path={runs / 'small-topics.jsonl'}"])
        resumed = await synthloom.arun(graph, small, resume=True)
    assert resumed.manifest["counts"]["resumed_from_journal"] == 12
    assert len(synthloom.load_dataset(small, "sft", reviewed=True)) == 2
    (small / "reviews.jsonl").unlink()


def test_push_reviewed_uploads_only_accepted_records_with_their_edits(tmp_path: Path,
                                                                      fake_hub: FakeHub) -> None:  # noqa: F811
    run = tmp_path / "run"
    make_run(run, count=5)
    records = lines(run / "sft.jsonl")
    edited = [dict(turn) for turn in records[1]["messages"]]
    edited[1]["content"] = "Edited by a reviewer."
    append_review(run, Review("sft", records[0]["metadata"]["id"], "reject", "off topic"))
    append_review(run, Review("sft", records[1]["metadata"]["id"], "accept", "", {"messages": edited}))
    append_review(run, Review("sft", records[2]["metadata"]["id"], "accept"))
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}

    done = push_cli(run, fake_hub, "--reviewed")
    assert done.returncode == 0, done.stderr
    [commit] = fake_hub.commits
    uploaded = [json.loads(line) for line in commit["sft.jsonl"].decode().splitlines()]
    assert uploaded == [{**records[1], "messages": edited}, records[2]]
    card = commit["README.md"].decode()
    assert "## Human review" in card and "only the records accepted in review" in card
    assert f"| sft | {len(records)} | 2 | 1 | 1 | {len(records) - 3} |" in card
    assert json.loads(commit["manifest.json"])["counts"]["outputs"]["sft"] == 2
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before  # run untouched

    card_path = synthloom.build_card(run)  # the run's own card counts the reviews too
    assert f"| sft | {len(records)} | 2 | 1 | 1 | {len(records) - 3} |" in card_path.read_text()


async def test_iterate_previews_an_edited_node_beside_the_old_and_saves_a_new_file(tmp_path: Path) -> None:
    graph_file = tmp_path / "graph" / "quickstart.yaml"
    graph_file.parent.mkdir()
    graph_file.write_text(GRAPH.read_text())
    with FakeOpenAI(model="*", script=script()) as server:
        (tmp_path / "runs").mkdir()
        await asyncio.to_thread(make_run, tmp_path / "runs" / "it", 5, server, graph_file)
        (graph_file.parent / "data").mkdir()   # where the graph itself looks for its seeds
        (graph_file.parent / "data" / "topics.jsonl").write_text((tmp_path / "runs" / "it-topics.jsonl").read_text())
        runner, url = await start_studio([tmp_path / "runs"], "127.0.0.1", 0)
        try:
            base = url.rstrip("/") + "/runs/it/iterate"
            status, html = await get(base + "?node=answer")
            assert status == 200 and "You are a patient teacher" in html
            spec = re.search(r'<textarea name="spec"[^>]*>(.*?)</textarea>', html, re.S).group(1)  # type: ignore[union-attr]
            edited = unescape(spec).replace("You are a patient teacher", "You are a pirate teacher")
            form = {"_token": token_of(html), "node": "answer", "spec": edited, "ids": "topic001, topic002",
                    "action": "preview"}
            status, html, _ = await post(base, form, headers={"Origin": url.rstrip("/")})
            assert status == 200 and 'class="problem"' not in html, re.findall(r'class="problem">(.*?)<', html)
            rows = re.findall(r'<tr data-id="([^"]+)">(.*?)</tr>', html, re.S)
            assert [row_id for row_id, _ in rows] == ["topic001", "topic002"]
            for row_id, cells in rows:
                old, new = cells.split('<td class="new">')
                assert f"Notes on {row_id} here." in old and f"Arr, notes on {row_id} here." in new

            before = sorted(path.name for path in graph_file.parent.iterdir())
            status, html, _ = await post(base, {**form, "action": "save"}, headers={"Origin": url.rstrip("/")})
            saved = graph_file.with_name("quickstart.studio-1.yaml")
            assert status == 200 and str(saved) in html
            assert sorted(path.name for path in graph_file.parent.iterdir()) == sorted([*before, saved.name])
            assert graph_file.read_text() == GRAPH.read_text()        # the old file is never written over
            assert "pirate teacher" in saved.read_text() and synthloom.load(saved).nodes["answer"]

            form["spec"] = "type: llm\nmessages: [unclosed"
            status, html, _ = await post(base, form, headers={"Origin": url.rstrip("/")})
            assert status == 200 and "does not parse at line 2" in html
        finally:
            await runner.cleanup()


async def test_failed_and_dropped_records_show_node_error_and_state(fake_llm: Any, write_graph: Any,
                                                                    tmp_path: Path) -> None:
    """The report test's graph: a node that fails for 'boom', a dedup that drops 'dup', a topic that is a
    <script> tag."""
    from tests.fixture_server import last_user_text
    from tests.test_report import RUN_A, SCRIPT, SEEDS, report_graph
    server = fake_llm(script=[(".", lambda body: RUN_A[last_user_text(body)])])
    graph = write_graph(report_graph(server), SEEDS)
    (tmp_path / "runs").mkdir()
    await synthloom.arun(graph, tmp_path / "runs" / "r", use_cache=False)
    runner, url = await start_studio([tmp_path / "runs"], "127.0.0.1", 0)
    try:
        base = url.rstrip("/") + "/runs/r/files/"
        status, html = await get(base + "failed")
        assert status == 200 and len(articles(html)) == 1   # seeds without an id: keyed by their hash
        assert "<b>check</b>: ValueError: this topic always fails" in html and "attempts: 1" in html
        assert "&#34;topic&#34;: &#34;boom&#34;" in html                      # the seed row
        status, html = await get(base + "dropped")
        assert len(articles(html)) == 1 and "<b>dedup</b>: duplicate" in html and "&#34;of&#34;: &#34;one&#34;" in html
        status, html = await get(base + "sft?q=alert")
        assert len(articles(html)) == 1 and SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        status, html = await get(url.rstrip("/") + "/runs/r")
        assert "check: ValueError" in html and "dedup: duplicate" in html
    finally:
        await runner.cleanup()


async def test_a_running_run_whose_files_stopped_moving_shows_as_stopped(runs: Path, tmp_path: Path) -> None:
    import os
    import shutil
    root = tmp_path / "runs"
    shutil.copytree(runs / "small", root / "held")
    manifest = json.loads((root / "held" / "manifest.json").read_text())
    (root / "held" / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    runner, url = await start_studio([root], "127.0.0.1", 0)
    try:
        async def status() -> str:
            async with aiohttp.ClientSession() as session, session.get(url + "api/runs") as response:
                return str((await response.json())[0]["status"])
        assert await status() == "running"
        for name in ("manifest.json", "journal.jsonl"):
            os.utime(root / "held" / name, (0, 1_000_000))
        assert await status() == "stopped"
    finally:
        await runner.cleanup()


async def test_editing_a_dpo_side_through_the_record_page(tmp_path: Path) -> None:
    """A DPO record's chosen turn edited in the form: the reviewed dataset has the edit, the rejected side and
    the prompt as written."""
    root = tmp_path / "runs"
    (root / "dpo").mkdir(parents=True)
    pair = {"prompt": [{"role": "user", "content": "Why is the sky blue?"}],
            "chosen": [{"role": "assistant", "content": "Rayleigh scattering."}],
            "rejected": [{"role": "assistant", "content": "Because."}], "metadata": {"id": "sky", "margin": 4.0}}
    (root / "dpo" / "dpo.jsonl").write_text(json.dumps(pair) + "\n")
    (root / "dpo" / "manifest.json").write_text(json.dumps({"status": "completed",
                                                            "counts": {"outputs": {"dpo": 1}}}))
    runner, url = await start_studio([root], "127.0.0.1", 0)
    try:
        status, html = await get(url + "runs/dpo/files/dpo/1")
        assert 'name="turn:chosen:0"' in html and 'name="turn:rejected:0"' in html
        form = {"_token": token_of(html), "verdict": "accept", "turn:chosen:0": "Air scatters blue light most.",
                "turn:rejected:0": "Because."}
        assert (await post(url + "runs/dpo/files/dpo/1/review", form, headers={"Origin": url.rstrip("/")}))[0] == 303
    finally:
        await runner.cleanup()
    [kept] = synthloom.load_dataset(root / "dpo", "dpo", reviewed=True).to_list()
    assert kept["chosen"] == [{"role": "assistant", "content": "Air scatters blue light most."}]
    assert kept["rejected"] == pair["rejected"] and kept["prompt"] == pair["prompt"]


def test_the_command_serves_until_interrupted_and_names_a_missing_folder(runs: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time
    import urllib.request
    missing = subprocess.run([sys.executable, "-m", "synthloom.cli", "studio", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"no folder {tmp_path / 'nope'}" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "synthloom.cli", "studio", str(runs), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"synthloom studio on http://127.0.0.1:{port}/ (Ctrl-C to stop)"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
                    assert response.status == 200 and b'data-run="big"' in response.read()
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()

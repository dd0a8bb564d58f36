"""The dataset card (README.md) every run writes, `synthloom card`, and `synthloom push` to a fake Hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from huggingface_hub import DatasetCard

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI


def qa_graph(server: FakeOpenAI) -> dict[str, Any]:
    return {
        "name": "qa-card", "description": "Questions and answers for the card test.",
        "models": {"writer": model_spec(server, api_key_env="CARD_TEST_KEY", params={"temperature": 0.3}),
                   "spare": {"backend": "openai", "base_url": "http://user:pw@example.invalid/v1", "model": "m",
                             "params": {"extra": {"api_key": "sk-in-params"}}}},
        "nodes": {"answer": {"type": "llm", "model": "writer", "output": "answer",
                             "messages": [{"role": "user", "content": "{{ question }}"}]},
                  "keep": {"type": "filter", "when": "question != 'q3'", "reason": "third question"}},
        "edges": [["answer", "keep"]],
        "outputs": [{"name": "sft", "format": "sft", "messages": [{"role": "user", "content": "{{ question }}"},
                                                                   {"role": "assistant", "content": "{{ answer }}"}]},
                    {"name": "dpo", "format": "dpo", "when": "question == 'none'", "prompt_from": "question",
                     "chosen_from": "answer", "rejected_from": "question"}],
    }


@pytest.fixture(autouse=True)
def keys_may_go_to_the_fixture_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer model sends CARD_TEST_KEY to the fixture server: the user's one line of configuration."""
    monkeypatch.setenv("SYNTHLOOM_KEY_HOSTS", "127.0.0.1")


@pytest.fixture
def finished_run(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CARD_TEST_KEY", "sk-secret-value-123")
    server = fake_llm()
    graph = write_graph(qa_graph(server), [{"id": f"r{n}", "question": f"q{n}"} for n in range(5)])
    synthloom.run(graph, tmp_path / "out")
    return tmp_path / "out"


def test_every_run_writes_a_card_the_hub_parser_reads(finished_run: Path) -> None:
    text = (finished_run / "README.md").read_text()
    card = DatasetCard.load(finished_run / "README.md")
    data = card.data.to_dict()
    # only outputs holding records are configs (an empty jsonl breaks the Hub's viewer)
    assert data["configs"] == [{"config_name": "sft", "data_files": [{"split": "train", "path": "sft.jsonl"}],
                                "default": True}]
    assert data["license"] == "unknown" and "licence: set it" in text
    assert data["task_categories"] == ["text-generation"] and data["size_categories"] == ["n<1K"]
    assert data["tags"] == ["synthetic", "synthloom", "sft"] and data["pretty_name"] == "qa-card"
    body = card.text
    assert "Questions and answers for the card test." in body
    assert "| 5 | 4 | 1 | 0 |" in body                      # seeded, written, dropped, failed
    assert "| keep: third question | 1 |" in body           # drop reasons
    assert "```mermaid\nflowchart TD" in body and "n_answer --> n_keep" in body
    assert "| sft | sft | 4 | `sft.jsonl` |" in body and "| dpo | dpo | 0 | `dpo.jsonl` |" in body
    assert "distinct-1" in body and "| sft | assistant messages |" in body
    assert "```yaml\nname: qa-card" in body                  # the graph file itself
    # models: the key's variable name, never its value; no password from the URL; secret-named params hidden
    assert "$CARD_TEST_KEY" in body and "sk-secret-value-123" not in text
    assert "user:pw" not in body.split("## Graph file")[0] and '"temperature": 0.3' in body
    assert "sk-in-params" not in body.split("## Graph file")[0] and "<hidden>" in body
    manifest = synthloom.read_manifest(finished_run)
    assert Path(manifest["graph_file"]) == (finished_run.parent / "graph.yaml").resolve()


def test_card_command_rebuilds_the_same_card(finished_run: Path) -> None:
    written = (finished_run / "README.md").read_text()
    (finished_run / "README.md").unlink()
    graph = finished_run.parent / "graph.yaml"
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "card", str(finished_run), "--graph", str(graph)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (finished_run / "README.md").read_text() == written
    assert synthloom.build_card(finished_run, graph=graph) == finished_run / "README.md"


def test_a_card_quotes_a_graph_file_outside_the_run_only_when_the_user_names_it(finished_run: Path,
                                                                                  tmp_path: Path) -> None:
    """A downloaded run's manifest may name any graph file of yours (with its comments and hosts): `card` and
    `push` quote the file only when it lies inside the run directory or the user passes it with --graph."""
    mine = tmp_path / "private" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("name: mine  # private-comment-xyz\nnodes:\n  keep: {type: filter, when: 'True'}\n")
    manifest_path = finished_run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["graph_file"] = str(mine)
    manifest_path.write_text(json.dumps(manifest))

    def card(*extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "synthloom.cli", "card", str(finished_run), *extra],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return (finished_run / "README.md").read_text()

    left_out = card()
    assert "private-comment-xyz" not in left_out and "quoted only when you name it" in left_out
    (finished_run / "README.md").unlink()
    pushed = subprocess.run([sys.executable, "-m", "synthloom.cli", "push", str(finished_run), "me/data",
                             "--dry-run"], capture_output=True, text=True, timeout=120)
    assert pushed.returncode == 0 and "## Graph file" in pushed.stdout, pushed.stderr
    assert "private-comment-xyz" not in pushed.stdout
    assert "private-comment-xyz" in card("--graph", str(mine))
    inside = finished_run / "graph.yaml"
    inside.write_text(mine.read_text())
    manifest["graph_file"] = str(inside)
    manifest_path.write_text(json.dumps(manifest))
    assert "private-comment-xyz" in card()
    (finished_run / "README.md").unlink()
    inside.unlink()
    inside.symlink_to(mine)  # a link inside the run directory to a file outside it is outside
    assert "private-comment-xyz" not in card()


def test_card_of_a_directory_without_a_run_is_one_line_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "card", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "manifest.json" in done.stderr and "Traceback" not in done.stderr


def test_a_fresh_run_refuses_a_stray_readme_and_overwrite_deletes_it(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARD_TEST_KEY", "sk-secret-value-123")
    server = fake_llm()
    graph = write_graph(qa_graph(server), [{"id": "r1", "question": "q1"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("someone's notes")
    with pytest.raises(synthloom.ConfigError, match="README.md"):
        synthloom.run(graph, out)
    assert (out / "README.md").read_text() == "someone's notes"
    synthloom.run(graph, out, overwrite=True)
    assert DatasetCard.load(out / "README.md").data.pretty_name == "qa-card"


def test_push_file_list_leaves_bookkeeping_home(finished_run: Path) -> None:
    from synthloom.inspect.hub import files_to_push
    (finished_run / "pools").mkdir(exist_ok=True)
    # dpo wrote no record, so it has no file to upload
    assert files_to_push(finished_run) == ["README.md", "manifest.json", "sft.jsonl"]
    assert files_to_push(finished_run, all_files=True) == ["README.md", "dropped.jsonl", "manifest.json",
                                                           "sft.jsonl"]


class FakeHub:
    """The four Hub endpoints a push calls (create repo, validate the card's YAML, preupload, commit),
    served by aiohttp on loopback; what arrives is kept for the test to check."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.validated: list[str] = []
        self.commits: list[dict[str, bytes]] = []
        self.headers: list[str] = []
        self.server: FakeOpenAI | None = None

    def app(self) -> Any:
        from aiohttp import web

        async def create(request: web.Request) -> web.Response:
            body = await request.json()
            self.created.append(body)
            self.headers.append(request.headers.get("Authorization", ""))
            return web.json_response({"url": f"{self.url}/datasets/{body['organization']}/{body['name']}"})

        async def validate(request: web.Request) -> web.Response:
            self.validated.append((await request.json())["content"])
            return web.json_response({})

        async def preupload(request: web.Request) -> web.Response:
            files = (await request.json())["files"]
            return web.json_response({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                for f in files]})

        async def commit(request: web.Request) -> web.Response:
            import base64
            lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
            self.commits.append({item["value"]["path"]: base64.b64decode(item["value"]["content"])
                                 for item in lines if item["key"] == "file"})
            repo = f"{request.match_info['ns']}/{request.match_info['name']}"
            return web.json_response({"commitUrl": f"{self.url}/datasets/{repo}/commit/{'0' * 40}",
                                      "commitOid": "0" * 40})

        app = web.Application()
        app.router.add_post("/api/repos/create", create)
        app.router.add_post("/api/validate-yaml", validate)
        app.router.add_post("/api/datasets/{ns}/{name}/preupload/{revision}", preupload)
        app.router.add_post("/api/datasets/{ns}/{name}/commit/{revision}", commit)
        return app

    url = ""


@pytest.fixture
def fake_hub() -> Any:
    import asyncio
    import threading

    from aiohttp import web
    hub = FakeHub()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(hub.app())

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        hub.url = f"http://127.0.0.1:{port}"
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield hub
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_push_uploads_the_run_to_a_hub_in_one_commit(finished_run: Path, fake_hub: FakeHub) -> None:
    env = {**__import__("os").environ, "HF_ENDPOINT": fake_hub.url, "HF_TOKEN": "hf_fake_token",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "push", str(finished_run), "me/qa-data",
                           "--private"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "pushed" in done.stdout and "me/qa-data" in done.stdout
    assert fake_hub.created[0]["name"] == "qa-data" and fake_hub.created[0]["organization"] == "me"
    assert fake_hub.created[0]["visibility"] == "private" and fake_hub.created[0]["type"] == "dataset"
    assert fake_hub.headers == ["Bearer hf_fake_token"]
    [commit] = fake_hub.commits
    assert sorted(commit) == ["README.md", "manifest.json", "sft.jsonl"]  # no journal, lock, failed, dropped
    assert commit["sft.jsonl"] == (finished_run / "sft.jsonl").read_bytes()
    assert fake_hub.validated == [(finished_run / "README.md").read_text()]  # the Hub checked our card


def push_cli(run: Path, hub: FakeHub, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake_token", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "synthloom.cli", "push", str(run), "me/qa-data", *extra],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("name, extra", [("sft.jsonl", []), ("manifest.json", []), ("README.md", []),
                                         ("dropped.jsonl", ["--all"])])
def test_push_refuses_a_link_in_the_run_directory(name: str, extra: list[str], finished_run: Path,
                                                  fake_hub: FakeHub, tmp_path: Path) -> None:
    """A crafted run directory whose files link elsewhere (an SSH key, say) must not upload what they point at."""
    secret = tmp_path / "id_secret"
    original = (finished_run / name).read_bytes()
    secret.write_bytes(original.replace(b"q1", b"SECRET-q1") if name != "README.md" else b"SECRET card")
    (finished_run / name).unlink()
    (finished_run / name).symlink_to(secret)
    done = push_cli(finished_run, fake_hub, *extra)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert name in done.stderr and "symbolic link" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert fake_hub.commits == [] and fake_hub.created == []


def test_push_refuses_a_fifo_named_like_an_output_without_hanging(finished_run: Path, fake_hub: FakeHub) -> None:
    (finished_run / "sft.jsonl").unlink()
    os.mkfifo(finished_run / "sft.jsonl")
    done = push_cli(finished_run, fake_hub)
    assert done.returncode == 2 and "sft.jsonl" in done.stderr and "not a regular file" in done.stderr, done.stderr
    assert fake_hub.commits == []


def test_push_writes_a_missing_card_in_place_of_a_link_never_through_it(finished_run: Path, fake_hub: FakeHub,
                                                                        tmp_path: Path) -> None:
    """The card is written as README.md.tmp, then renamed; a link of that name must not carry the write out."""
    outside = tmp_path / "outside.md"
    outside.write_text("untouched")
    (finished_run / "README.md").unlink()
    (finished_run / "README.md.tmp").symlink_to(outside)
    done = push_cli(finished_run, fake_hub)
    assert done.returncode == 0, done.stderr
    assert outside.read_text() == "untouched" and not (finished_run / "README.md").is_symlink()
    [commit] = fake_hub.commits
    assert commit["README.md"] == (finished_run / "README.md").read_bytes() and b"qa-card" in commit["README.md"]


def test_push_dry_run_lists_the_files_and_prints_the_card_without_a_request(finished_run: Path,
                                                                           fake_hub: FakeHub) -> None:
    env = {**__import__("os").environ, "HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "1"}
    env.pop("HF_TOKEN", None)  # no token needed: nothing is sent
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "push", str(finished_run), "me/qa-data",
                           "--dry-run", "--all"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    head, card = done.stdout.split("\n--- README.md (the dataset card) ---\n")
    assert head.splitlines()[0] == f"would upload to {fake_hub.url}/datasets/me/qa-data from {finished_run}:"
    listed = [line.split()[0] for line in head.splitlines()[1:]]
    assert listed == ["README.md", "dropped.jsonl", "manifest.json", "sft.jsonl"]
    assert f"sft.jsonl  ({(finished_run / 'sft.jsonl').stat().st_size:,} bytes)" in head
    assert card == (finished_run / "README.md").read_text()
    assert fake_hub.created == [] and fake_hub.commits == [] and fake_hub.validated == []


def test_the_card_names_the_graphs_language(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
                                            finished_run: Path, tmp_path: Path) -> None:
    assert DatasetCard.load(finished_run / "README.md").data.to_dict()["language"] == ["en"]  # unsaid: English
    spec = {**qa_graph(fake_llm()), "language": "fr"}
    graph = write_graph(spec, [{"id": "r1", "question": "q1"}], name="french.yaml")
    out = tmp_path / "french"
    synthloom.run(graph, out)
    assert DatasetCard.load(out / "README.md").data.to_dict()["language"] == ["fr"]
    graph.unlink()  # `synthloom card` rebuilds it from the manifest alone
    assert DatasetCard.load(synthloom.build_card(out)).data.to_dict()["language"] == ["fr"]
    for bad in ("English", ["en", 3], []):
        with pytest.raises(synthloom.ConfigError, match="language"):
            synthloom.load(write_graph({**spec, "language": bad}, name="bad.yaml"))


def test_push_without_a_run_is_one_line_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "push", str(tmp_path), "me/x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "manifest.json" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("records, category", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"),
                                               (250_000, "100K<n<1M"), (10 ** 12, "n>1T")])
def test_size_categories_are_the_hubs(records: int, category: str) -> None:
    from synthloom.inspect.card import size_category
    assert size_category(records) == category


def test_a_large_output_is_counted_whole_and_measured_on_every_kth_line(tmp_path: Path) -> None:
    """The card of a ten-million-record run must not parse ten million lines: past `parse_at_most` it
    parses every k-th line (spread over the whole file, not its head) and still counts every line."""
    import random

    from synthloom.inspect.report_data import summarise_output
    path = tmp_path / "sft.jsonl"
    draw = random.Random(7)
    rows = [{"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "w " * draw.randint(1, 50)}],
             "metadata": {"id": f"r{n}", "score": n}} for n in range(1000)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    whole = summarise_output(path, "sft", embeddings=False)
    sampled = summarise_output(path, "sft", embeddings=False, expected=1000, parse_at_most=100)
    assert whole.records == sampled.records == 1000 and whole.every == 1 and sampled.every == 10
    assert whole.lengths.n == 1000 and sampled.lengths.n == 100
    assert sampled.numbers["score"].high == 990  # the last lines are read too
    whole_median, sampled_median = whole.lengths.quantile(0.5), sampled.lengths.quantile(0.5)
    assert whole_median is not None and sampled_median is not None and abs(whole_median - sampled_median) <= 5

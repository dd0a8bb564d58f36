"""`run --ray`: shards as Ray tasks (a local Ray, 2 CPUs) into one run directory, exactly once, with
run-wide budgets and dedup, surviving a killed worker and an interrupted run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom.config.schema import SeedConfig
from synthloom.distributed.driver import merge_outputs, run_on_ray
from synthloom.graph.seeds import in_shard

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI
from tests.test_run import chain_graph, lines

ray = pytest.importorskip("ray", reason="run --ray needs the ray extra (pip install -e '.[ray]')")
pytestmark = pytest.mark.slow  # a local Ray and its workers: minutes for the module on 2 cores


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray for the module; the CLI tests join it with --address auto."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def seeds_of(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{index:03d}", "topic": f"topic {index}"} for index in range(count)]


def ids_in(path: Path) -> list[str]:
    return sorted(record["metadata"]["id"] for record in lines(path))


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_two_shards_write_every_record_once_into_one_directory(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.005)
    seeds = seeds_of(40)
    graph = write_graph(chain_graph(server), seeds)
    out = tmp_path / "out"
    manifest = run_on_ray(graph, out, shards=2, num_cpus_per_shard=0.5)
    assert manifest["status"] == "completed", manifest["message"]
    assert ids_in(out / "sft.jsonl") == [seed["id"] for seed in seeds]
    assert len(lines(out / "raw.jsonl")) == 40
    assert manifest["counts"]["written"] == 40 and manifest["counts"]["outputs"] == {"sft": 40, "raw": 40}
    assert [shard["status"] for shard in manifest["shards"]] == ["completed", "completed"]
    assert sum(shard["counts"]["written"] for shard in manifest["shards"]) == 40
    assert all(shard["counts"]["written"] > 0 for shard in manifest["shards"])
    assert manifest["models"]["w"]["calls"] == 80 == server.successes
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 40

    again = run_on_ray(graph, out, shards=2, num_cpus_per_shard=0.5, resume=True)  # nothing left to do
    assert again["status"] == "completed" and ids_in(out / "sft.jsonl") == [seed["id"] for seed in seeds]
    assert len(again["parts"]) == 2 and server.successes == 80
    with pytest.raises(synthloom.ConfigError, match="already holds a run"):
        run_on_ray(graph, out, shards=2)
    with pytest.raises(synthloom.ConfigError, match="started with --shards 2"):
        run_on_ray(graph, out, shards=3, resume=True)


def test_a_ray_run_leaves_the_layout_of_a_one_process_run(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """The same files at the top of the run directory: the dataset card, the outputs, dropped.jsonl (no
    failed.jsonl where nothing failed, no traces.jsonl without --trace), and a card with the same header and
    counts. Each way keeps its own bookkeeping beside them (the journal; the plan and the shards)."""
    server = fake_llm()
    spec = chain_graph(server)
    spec["nodes"]["keep"] = {"type": "filter", "rules": [{"when": "keep", "reason": "not wanted"}]}
    spec["edges"].append(["answer", "keep"])
    graph = write_graph(spec, [{**seed, "keep": index % 4 != 0} for index, seed in enumerate(seeds_of(20))])
    one, many = tmp_path / "one", tmp_path / "many"
    assert synthloom.run(graph, one).manifest["status"] == "completed"
    assert run_on_ray(graph, many, shards=2, num_cpus_per_shard=0.5)["status"] == "completed"

    def listing(directory: Path, own: set[str]) -> list[str]:
        return sorted(path.name for path in directory.iterdir() if path.name not in own | {".synthloom.lock"})

    assert listing(one, {"journal.jsonl"}) == ["README.md", "dropped.jsonl", "manifest.json", "raw.jsonl",
                                               "sft.jsonl"]
    assert listing(many, {"ray.json", "shards"}) == listing(one, {"journal.jsonl"})

    def card_header_and_counts(directory: Path) -> tuple[str, str]:
        card = (directory / "README.md").read_text()
        counts = card[card.index("## Counts"):card.index("## Graph\n")]
        return card.split("\n---\n")[0], counts

    assert card_header_and_counts(many) == card_header_and_counts(one)
    assert "| 20 | 15 | 5 | 0 |" in card_header_and_counts(many)[1] and "keep: not wanted | 5 |" in (
        many / "README.md").read_text()
    written = card_header_and_counts(many)
    rebuilt = synthloom.build_card(many).read_text()  # `synthloom card DIR`: from the manifest alone
    assert card_header_and_counts(many) == written and "```mermaid" in rebuilt and "## Models" in rebuilt


def test_the_one_process_and_ray_manifests_of_a_run_have_the_same_fields_and_counts(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """One manifest builder (`store.manifest.manifest_of`): the driver fills it with its shards' summed
    figures, so its fields cannot drift from a one-process run's; `--ray` adds only `ray` and `shards`."""
    server = fake_llm()
    spec = chain_graph(server)
    spec["nodes"]["keep"] = {"type": "filter", "rules": [{"when": "keep", "reason": "not wanted"}]}
    spec["edges"].append(["answer", "keep"])
    graph = write_graph(spec, [{**seed, "keep": index % 3 != 0} for index, seed in enumerate(seeds_of(12))])
    one = synthloom.run(graph, tmp_path / "one", cache_dir=tmp_path / "cache-one").manifest
    many = run_on_ray(graph, tmp_path / "many", shards=2, num_cpus_per_shard=0.5, cache_dir=tmp_path / "cache-many")

    def shape(value: Any) -> Any:  # the keys at every depth, without the values
        return {key: shape(item) for key, item in value.items()} if isinstance(value, dict) else None

    ray_only = {"ray", "shards"}
    assert set(many) - set(one) == ray_only and set(one) <= set(many)
    for key in ("counts", "nodes", "models", "cache"):
        assert shape(many[key]) == shape(one[key]), key
    assert set(many["parts"][0]) - set(one["parts"][0]) == {"shards"}
    assert many["counts"] == one["counts"] == {**one["counts"], "written": 8, "dropped": 4, "seeded": 12}
    assert [many["parts"][0][key] for key in ("seeded", "written", "dropped")] == [12, 8, 4]
    assert many["nodes"]["keep"]["steps"] == one["nodes"]["keep"]["steps"] == 12
    assert many["cache"]["misses"] == one["cache"]["misses"] > 0
    assert many["models"]["w"]["calls"] == one["models"]["w"]["calls"]


def test_progress_sums_every_shard_into_one_figure(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """The CLI's one bar is fed these totals: every shard's records, not one shard's."""
    server = fake_llm(latency=0.01)
    graph = write_graph(chain_graph(server), seeds_of(40))
    seen: list[dict[str, int]] = []
    manifest = run_on_ray(graph, tmp_path / "out", shards=2, num_cpus_per_shard=0.5, on_progress=seen.append)
    assert manifest["status"] == "completed"
    shard_counts = [shard["counts"]["written"] for shard in manifest["shards"]]
    assert len(shard_counts) == 2 and min(shard_counts) > 0
    done = [figures.get("done", 0) for figures in seen]  # {} until a shard has reported
    assert done and done[-1] == 40 and done == sorted(done)


def test_the_server_never_sees_more_than_max_concurrency(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Each shard alone would send 3 at once, so 2 shards would send 6: the leases keep it at 3."""
    server = fake_llm(latency=0.05)
    graph = write_graph(chain_graph(server, max_concurrency=3), seeds_of(40))
    loaded = synthloom.load(graph)  # a Graph object, not a path: its config travels to the tasks
    manifest = synthloom.run(loaded, tmp_path / "out", ray=True, shards=2, num_cpus_per_shard=0.5,
                             use_cache=False).manifest
    assert manifest["status"] == "completed" and manifest["counts"]["written"] == 40
    assert 2 <= server.peak_in_flight <= 3
    assert manifest["concurrency"]["w"] == {"ceiling": 3, "peak": 3}


def test_rpm_is_shared_across_shards_not_granted_to_each(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """rpm 120 is one bucket of 120 calls refilled at 2 a second for the whole run. Each shard gets 35
    records (70 calls): 120 calls go at once, the last 20 come at 2 a second. Were each shard given the full
    rpm, they would come at 4 a second; were the first shard to start (alone, for a moment) to open with
    its whole lease, more than 120 would come at once."""
    server = fake_llm()
    seeds = [{"id": f"r{n:03d}", "topic": f"topic {n}"} for n in range(400)]
    split = [[seed for seed in seeds if in_shard(seed, SeedConfig(shard=(k, 2)))][:35] for k in range(2)]
    graph = write_graph(chain_graph(server, max_concurrency=4, rpm=120), split[0] + split[1])
    manifest = run_on_ray(graph, tmp_path / "out", shards=2, num_cpus_per_shard=0.5, use_cache=False)
    assert manifest["status"] == "completed" and manifest["counts"]["written"] == 70
    assert server.requests == len(server.arrivals) == 140
    first = server.arrivals[0]
    opening = sum(1 for arrival in server.arrivals if arrival - first <= 2.0)
    assert opening <= 120 + 2 * 2 + 4, f"{opening} calls in the first 2 s under a run-wide rpm of 120"
    tail = server.arrivals[-1] - server.arrivals[120]  # the last 20 calls, 10 from each shard
    assert tail >= 7, f"the calls past the first 120 came at {19 / tail:.1f} a second, not 2"


def test_a_killed_worker_resumes_its_shard_and_the_run_finishes_once(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.03)
    seeds = seeds_of(120)
    graph = write_graph(chain_graph(server, max_concurrency=4), seeds)
    out = tmp_path / "out"
    result: dict[str, Any] = {}
    driver = threading.Thread(target=lambda: result.update(
        run_on_ray(graph, out, shards=2, num_cpus_per_shard=0.5, use_cache=False)))
    driver.start()
    lock, journal = out / "shards" / "0" / ".synthloom.lock", out / "shards" / "0" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journal.exists() and len(journal.read_text().splitlines()) > 10):
        time.sleep(0.05)
    holder = re.match(r"pid (\d+)", lock.read_text())
    assert holder, lock.read_text()
    os.kill(int(holder.group(1)), signal.SIGKILL)
    driver.join(120)
    assert not driver.is_alive()
    assert result["status"] == "completed", result["message"]
    assert ids_in(out / "sft.jsonl") == [seed["id"] for seed in seeds]
    assert result["counts"]["written"] == 120
    parts = [entry for entry in lines(journal) if "id" not in entry]
    assert len(parts) == 2  # the retried task resumed the shard the dead worker left
    assert result["shards"][0]["counts"]["resumed_from_journal"] >= 10


def test_duplicates_planted_across_shards_are_removed(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm()
    seeds = [{"id": f"r{index:03d}", "topic": f"topic {index % 15}"} for index in range(45)]
    shard_of = {seed["id"]: next(k for k in range(2) if in_shard(seed, SeedConfig(shard=(k, 2)))) for seed in seeds}
    by_topic: dict[str, set[int]] = {}
    for seed in seeds:
        by_topic.setdefault(seed["topic"], set()).add(shard_of[seed["id"]])
    assert sum(len(found) == 2 for found in by_topic.values()) >= 5  # copies really sit in both shards
    spec = {
        "name": "dedup",
        "models": {"w": model_spec(server)},
        "nodes": {
            "unique": {"type": "dedup", "field": "topic", "method": "exact"},
            "answer": {"type": "llm", "model": "w", "output": "answer",
                       "messages": [{"role": "user", "content": "About {{ topic }}"}]},
        },
        "edges": [["unique", "answer"]],
        "outputs": [{"name": "sft", "format": "sft", "messages": [{"role": "user", "content": "{{ topic }}"},
                                                                  {"role": "assistant", "content": "{{ answer }}"}]}],
    }
    graph = write_graph(spec, seeds)
    out = tmp_path / "out"
    manifest = run_on_ray(graph, out, shards=2, num_cpus_per_shard=0.5)
    assert manifest["status"] == "completed", manifest["message"]
    topics = sorted(record["messages"][0]["content"] for record in lines(out / "sft.jsonl"))
    assert topics == sorted(f"topic {index}" for index in range(15))
    assert manifest["counts"]["dropped"] == 30 == len(lines(out / "dropped.jsonl"))
    assert manifest["counts"]["drop_reasons"] == {"unique: duplicate": 30}



def test_a_resumed_run_rebuilds_the_shared_index_before_any_shard_goes_on(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Part 1 runs only shard 2's rows; part 2 (--resume, no limit) brings copies of them in shards 0 and
    1, which Ray starts first (2 CPUs, 3 shards). The new run's index must already hold shard 2's texts."""
    server = fake_llm()

    def shard_of(record_id: str) -> int:
        return next(k for k in range(3) if in_shard({"id": record_id}, SeedConfig(shard=(k, 3))))

    ids = [f"r{index:03d}" for index in range(200)]
    firsts = [record_id for record_id in ids if shard_of(record_id) == 2][:10]
    copies = [record_id for record_id in ids if shard_of(record_id) != 2][:10]
    seeds = [{"id": record_id, "topic": f"topic {n}"} for n, record_id in enumerate(firsts)]
    seeds += [{"id": record_id, "topic": f"topic {n}"} for n, record_id in enumerate(copies)]
    spec = {
        "name": "dedup", "models": {"w": model_spec(server)},
        "nodes": {"unique": {"type": "dedup", "field": "topic", "method": "exact"},
                  "answer": {"type": "llm", "model": "w", "output": "answer",
                             "messages": [{"role": "user", "content": "About {{ topic }}"}]}},
        "edges": [["unique", "answer"]],
        "outputs": [{"name": "raw", "format": "raw", "fields": ["topic"]}],
    }
    graph = write_graph(spec, seeds)
    out = tmp_path / "out"
    first = run_on_ray(graph, out, shards=3, limit=10)
    assert first["counts"]["written"] == 10 and [s["counts"]["written"] for s in first["shards"]] == [0, 0, 10]
    resumed = run_on_ray(graph, out, shards=3, resume=True)
    assert resumed["status"] == "completed", resumed["message"]
    assert resumed["counts"]["written"] == 10 and resumed["counts"]["dropped"] == 10
    assert sorted(record["topic"] for record in lines(out / "raw.jsonl")) == sorted(f"topic {n}" for n in range(10))


def test_resume_of_an_interrupted_ray_run_through_the_cli(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(latency=0.05, hold=["^Ask about topic 119$"])  # the first part cannot finish
    seeds = seeds_of(120)
    spec = chain_graph(server, max_concurrency=4)
    spec["run"] = {"drain_seconds": 1}
    graph = write_graph(spec, seeds)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(out), "--ray", "--address",
               "auto", "--shards", "2", "-q", "--no-cache"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journals = [out / "shards" / str(k) / "journal.jsonl" for k in range(2)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(len(path.read_text().splitlines()) if path.exists() else 0
                                              for path in journals) < 30:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    stopped = json.loads((out / "manifest.json").read_text())
    assert stopped["status"] == "interrupted" and 0 < stopped["counts"]["written"] < 120
    assert len(lines(out / "sft.jsonl")) == stopped["counts"]["written"]

    server.release()
    done = cli("run", str(graph), "-o", str(out), "--ray", "--address", "auto", "--resume", "--no-cache",
               "--progress-every", "0.2")  # stderr is a pipe: progress lines, the shards among them
    assert done.returncode == 0, done.stderr
    beats = [line for line in done.stderr.splitlines() if line.startswith("progress ")]
    assert beats and re.search(r"settled 120 \(\d+ by earlier parts\) · written", beats[-1]), done.stderr
    assert "shards 2/2 finished" in beats[-1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["written"] == 120
    assert ids_in(out / "sft.jsonl") == [seed["id"] for seed in seeds]
    assert len(manifest["parts"]) == 2


def test_a_workflow_name_runs_on_ray(fake_llm: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    server = fake_llm(model="*")
    manifest = run_on_ray("sycophancy", tmp_path / "out", shards=2, endpoint=server.url, limit=6,
                          num_cpus_per_shard=0.5)
    assert manifest["status"] == "completed", manifest["message"]
    assert manifest["counts"]["seeded"] == 6
    assert len(lines(tmp_path / "out" / "sft.jsonl")) == manifest["counts"]["outputs"]["sft"] > 0


def test_novelty_pool_and_cover_sampler_are_run_wide(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """Copies of a text in both shards pass a per-shard novelty pool; a per-shard cover sampler draws the
    same combinations in both shards. Run-wide, neither happens."""
    server = fake_llm()
    seeds = [{"id": f"r{index:03d}", "topic": f"alpha{index % 12} beta{index % 12} gamma{index % 12}"}
             for index in range(36)]
    spec = {
        "name": "novel",
        "models": {"w": model_spec(server)},
        "nodes": {
            "novel": {"type": "novelty", "field": "topic", "pool": "tasks", "threshold": 0.7},
            "draw": {"type": "sampler", "mode": "cover", "seed": 1,
                     "slots": {"persona": [f"p{n}" for n in range(4)], "tone": ["formal", "casual", "terse"]}},
            "answer": {"type": "llm", "model": "w", "output": "answer",
                       "messages": [{"role": "user", "content": "{{ persona }} {{ tone }}: {{ topic }}"}]},
        },
        "edges": [["novel", "draw"], ["draw", "answer"]],
        "outputs": [{"name": "raw", "format": "raw", "fields": ["topic", "persona", "tone"]}],
    }
    out = tmp_path / "out"
    manifest = run_on_ray(write_graph(spec, seeds), out, shards=2, num_cpus_per_shard=0.5)
    assert manifest["status"] == "completed", manifest["message"]
    records = lines(out / "raw.jsonl")
    assert sorted(record["topic"] for record in records) == sorted({seed["topic"] for seed in seeds})
    assert manifest["counts"]["drop_reasons"] == {"novel: not novel": 24}
    assert len({(record["persona"], record["tone"]) for record in records}) == 12  # each combination once


def test_merge_outputs_keeps_each_journaled_record_once(tmp_path: Path) -> None:
    """Shards run by hand (`--shard k/n`): lines of records their journal does not list are left out."""
    for index, ids in enumerate([["a", "b"], ["c"]]):
        shard = tmp_path / f"shard-{index}"
        shard.mkdir()
        (shard / "sft.jsonl").write_text("".join(json.dumps({"metadata": {"id": i}}) + "\n" for i in [*ids, "x"]))
        (shard / "journal.jsonl").write_text("".join(json.dumps({"id": i, "status": "written"}) + "\n" for i in ids))
    assert merge_outputs(tmp_path, ["sft"]) == {"sft": 3}
    assert ids_in(tmp_path / "sft.jsonl") == ["a", "b", "c"]


def test_an_endpoint_list_becomes_replicas_split_across_shards(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path]) -> None:
    from synthloom.distributed.driver import GraphSource
    server = fake_llm()
    graph = write_graph(chain_graph(server, max_concurrency=8), seeds_of(4))
    urls = [f"http://127.0.0.1:{9000 + n}/v1" for n in range(4)]
    source = GraphSource.of(graph, ["models.w.max_concurrency=8"], ",".join(urls))
    assert source.load().config.models["w"].urls() == urls
    shard = source.load_shard(1, 2).config.models["w"]
    assert shard.urls() == [urls[1], urls[3]] and shard.max_concurrency == 4
    three = source.load_shard(0, 5).config.models["w"]  # fewer replicas than shards: all of them, full budget
    assert three.urls() == urls and three.max_concurrency == 8


def test_ray_carries_the_users_consent_to_the_driver_and_every_shard(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    """`run --ray` used to drop --allow-code and --trust-graph (refused with --ray, accepted without, and the
    message told the user to pass the flag they had passed). --allow-key-host travels the same way."""
    server = fake_llm()
    spec = chain_graph(server, api_key_env="HOME")  # a variable the module's Ray workers have: the "key"
    spec["nodes"]["dump"] = {"type": "python", "function": "json:dumps", "output": "dumped"}
    spec["edges"].append(["answer", "dump"])
    spec["run"] = {"allow_code": ["json"]}
    graph = write_graph(spec, [{"id": f"r{n}", "topic": f"topic {n}", "obj": [n]} for n in range(6)])
    env = dict(os.environ)
    env.pop("SYNTHLOOM_ALLOW_CODE", None)
    env.pop("SYNTHLOOM_KEY_HOSTS", None)

    def run(out: str, *flags: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "synthloom.cli", "run", str(graph), "-o", str(tmp_path / out),
                               "--ray", "--address", "auto", "--shards", "2", "-q", "--no-cache", *flags],
                              capture_output=True, text=True, timeout=300, env={**env, **extra_env})

    refused = run("out", "--allow-key-host", "127.0.0.1")
    assert refused.returncode == 2 and "--trust-graph" in refused.stderr and "Traceback" not in refused.stderr
    # --allow-code, and a key host from the driver's environment (the workers' lacks it)
    done = run("out", "--allow-code", "json", SYNTHLOOM_KEY_HOSTS="127.0.0.1")
    assert done.returncode == 0, done.stderr
    records = lines(tmp_path / "out" / "raw.jsonl")
    assert sorted(record["dumped"] for record in records) == [f"[{n}]" for n in range(6)]
    assert {headers["Authorization"] for headers in server.headers_seen} == {f"Bearer {os.environ['HOME']}"}
    trusted = run("trusted", "--trust-graph")  # the graph's own run.allow_code, and its key host
    assert trusted.returncode == 0, trusted.stderr
    assert len(lines(tmp_path / "trusted" / "raw.jsonl")) == 6
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["shards"]) == 2


def test_the_folders_the_user_allows_reach_every_shard(write_graph: Callable[..., Path], tmp_path: Path,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """`allow_read` (the API's `--allow-read`) travels to the shards as the key hosts do: each shard's
    sampler reads its file from outside the graph's folder, and keeps its dedup index in the allowed one."""
    allowed = tmp_path_factory.mktemp("allowed")  # outside the graph's folder (tmp_path)
    (allowed / "values.jsonl").write_text('{"text": "from the allowed folder"}\n')
    spec = {"name": "consent",
            "nodes": {"pick": {"type": "sampler", "slots": {"x": {"file": str(allowed / "values.jsonl")}}},
                      "unique": {"type": "dedup", "field": "topic", "method": "exact",
                                 "index": str(allowed / "idx")}},
            "edges": [{"from": "pick", "to": "unique"}], "outputs": [{"name": "rows", "format": "raw"}]}
    seeds = seeds_of(8)
    graph = write_graph(spec, seeds)
    with pytest.raises(synthloom.ConfigError, match="allow-read"):
        run_on_ray(graph, tmp_path / "refused", shards=2, num_cpus_per_shard=0.5)
    manifest = run_on_ray(graph, tmp_path / "out", shards=2, num_cpus_per_shard=0.5, allow_read=[allowed])
    assert manifest["status"] == "completed", manifest["message"]
    rows = lines(tmp_path / "out" / "rows.jsonl")
    assert sorted(row["id"] for row in rows) == [seed["id"] for seed in seeds]
    assert {json.dumps(row["x"]) for row in rows} == {'{"text": "from the allowed folder"}'}
    assert (allowed / "idx" / "exact.sqlite").is_file()


@pytest.mark.parametrize("stray", ["manifest.json.tmp", "README.md.tmp", ".synthloom-ids.sqlite", "pools",
                                   "sft.jsonl -> nowhere"])
def test_a_ray_run_refuses_every_stray_file_the_one_process_run_refuses(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path, stray: str) -> None:
    """The driver checks a new run's directory against the journal's own list of its files (OWN_FILES), so
    a left-over temporary manifest or ledger, or a dangling link where an output goes, is refused as the
    one-process run refuses it, never written through or over."""
    graph = write_graph(chain_graph(fake_llm()), seeds_of(4))
    out = tmp_path / "out"
    out.mkdir()
    name, _, target = stray.partition(" -> ")
    if target:
        (out / name).symlink_to(tmp_path / target)
    elif name == "pools":
        (out / name).mkdir()
    else:
        (out / name).write_text("left over\n")
    with pytest.raises(synthloom.ConfigError, match=f"holds {re.escape(name)} but no run plan"):
        run_on_ray(graph, out, shards=2, num_cpus_per_shard=0.5)
    assert not (out / "ray.json").exists() and not (tmp_path / "nowhere").exists()
    with pytest.raises(synthloom.ConfigError, match=re.escape(name)):
        synthloom.run(graph, out)  # the one-process run refuses the same file (a link: as leading out)

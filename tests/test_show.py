"""`synthloom show --format html|svg`: a well-formed page and SVG holding every node, edge and condition."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom.inspect.diagram import render_svg

SVG = "{http://www.w3.org/2000/svg}"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "source", "wbr"}


def branching_graph() -> dict[str, Any]:
    """A start, a two-way conditional branch, a join, and a bounded loop with a condition full of < & "."""
    return {
        "name": "shapes <&>",
        "models": {"judge": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        "nodes": {
            "start": {"type": "tests.plugins_for_tests:word_count"},
            "long": {"type": "llm", "model": "judge", "output": "verdict",
                     "messages": [{"role": "user", "content": "{{ answer }}"}]},
            "short": {"type": "tests.plugins_for_tests:KeepLong", "field": "answer"},
            "join": {"type": "tests.plugins_for_tests:word_count"},
            "again": {"type": "tests.plugins_for_tests:word_count"},
        },
        "edges": [{"from": "start", "to": "long", "when": "words > 3 and answer != \"<b>&\""},
                  {"from": "start", "to": "short", "when": "words <= 3"},
                  ["long", "join"], ["short", "join"],
                  {"from": "join", "to": "again", "when": "words < 10", "max_visits": 2},
                  ["again", "join"]],
        "outputs": [{"name": "raw", "format": "raw"}],
    }


@pytest.fixture
def graph_file(write_graph: Callable[..., Path]) -> Path:
    return write_graph(branching_graph(), [{"answer": "a few words here"}])


class BalancedTags(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    return [" ".join(element.itertext()) for element in root.iter(f"{SVG}text")]  # a wrapped label's lines


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "synthloom.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_svg_holds_every_node_edge_and_condition(graph_file: Path) -> None:
    graph = synthloom.load(graph_file)
    svg = render_svg(graph)
    texts = svg_texts(svg)
    for name in ["start", "long", "short", "join", "again"]:
        assert name in texts
    assert "llm · judge" in texts  # type and model under the name
    assert 'words > 3 and answer != "<b>&"' in texts and "words <= 3" in texts
    assert "words < 10 · max_visits 2" in texts
    edges = ET.fromstring(svg).findall(f".//{SVG}path[@class='edge']")
    assert len(edges) == 6 == sum(len(out) for out in graph.edges_from.values())
    assert "<b>" not in svg and "&lt;b&gt;&amp;" in svg


def test_show_html_is_a_self_contained_page(graph_file: Path, tmp_path: Path) -> None:
    done = cli("show", str(graph_file), "--format", "html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = done.stdout
    checker = BalancedTags()
    checker.feed(page)
    checker.close()
    assert checker.open == []
    svg = page[page.index("<svg"):page.index("</svg>") + len("</svg>")]
    assert {"start", "long", "short", "join", "again", "words <= 3"} <= set(svg_texts(svg))
    assert "shapes &lt;&amp;&gt;" in page and "shapes <&>" not in page
    assert "<td>join</td><td>again</td><td><code>words &lt; 10</code></td><td>2</td>" in page
    assert "default-src 'none'" in page and "<script" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no network


def test_show_svg_to_a_file_and_mermaid_by_default(graph_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "graph.svg"
    done = cli("show", str(graph_file), "--format", "svg", "-o", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "start" in svg_texts(target.read_text(encoding="utf-8"))
    mermaid = cli("show", str(graph_file), cwd=tmp_path).stdout
    assert mermaid.startswith("flowchart TD") and 'n_join -- "words < 10, max 2" --> n_again' in mermaid
    bad = cli("show", str(graph_file), "--format", "png", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --format 'png' is not one of mermaid, html, svg"


def test_every_ready_made_workflow_draws() -> None:
    for name in ["quickstart", "self_instruct", "evol_instruct", "dialogues", "magpie"]:
        graph = synthloom.load(name)
        texts = svg_texts(render_svg(graph))
        assert set(graph.nodes) <= set(texts)
        conditions = {edge.when.source for out in graph.edges_from.values() for edge in out if edge.when}
        assert all(any(text.startswith(condition) for text in texts) for condition in conditions)

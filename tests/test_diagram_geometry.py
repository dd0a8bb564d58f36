"""The graph picture tells the truth: read the SVG's geometry back and check that no edge passes through a
box, no label covers a box or another label, and every label sits beside its own edge. For every shipped
graph and for random graphs with skip edges, loops, self-loops, parallel edges and long conditions."""
from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import synthloom
from synthloom.inspect.diagram import render_svg

SVG = "{http://www.w3.org/2000/svg}"
GRAPHS = sorted((Path(__file__).resolve().parent.parent / "graphs").glob("*.yaml"))
Point = tuple[float, float]
INSET = 1.5         # an edge may touch a box's border (where it starts or ends), never its inside
BESIDE = 12.0       # how far a label may be from its own edge


@dataclass
class Rect:
    left: float
    top: float
    right: float
    bottom: float

    def overlaps(self, other: Rect) -> bool:
        return (self.left < other.right and other.left < self.right and self.top < other.bottom
                and other.top < self.bottom)

    def shrunk(self, by: float) -> Rect:
        return Rect(self.left + by, self.top + by, self.right - by, self.bottom - by)


@dataclass
class Picture:
    boxes: dict[str, Rect]
    edges: list[tuple[str, str, str | None, list[Point]]]   # source, target, data-edge, polyline
    labels: list[tuple[str | None, str, Rect]]              # data-edge, text, rect


def rect_of(element: ET.Element) -> Rect:
    x, y = float(element.get("x", 0)), float(element.get("y", 0))
    return Rect(x, y, x + float(element.get("width", 0)), y + float(element.get("height", 0)))


def polyline(d: str) -> list[Point]:
    """The points of an SVG path made of M, L and C commands, each cubic curve sampled finely."""
    tokens = re.findall(r"[MLC]|-?\d+(?:\.\d+)?", d)
    points: list[Point] = []
    command = ""
    numbers: list[float] = []

    def flush() -> None:
        if command in "ML" and len(numbers) == 2:
            points.append((numbers[0], numbers[1]))
        elif command == "C" and len(numbers) == 6:
            p0, (x1, y1, x2, y2, x3, y3) = points[-1], numbers
            for step in range(1, 41):
                t = step / 40
                a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t ** 3
                points.append((a * p0[0] + b * x1 + c * x2 + e * x3, a * p0[1] + b * y1 + c * y2 + e * y3))
        else:
            return
        numbers.clear()

    for token in tokens:
        if token in "MLC":
            command = token
        else:
            numbers.append(float(token))
            flush()
    return points


def read_picture(svg: str) -> Picture:
    root = ET.fromstring(svg)
    boxes = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "node":
            name = group.find(f"{SVG}text")
            assert name is not None
            boxes[name.text or ""] = rect_of(group.find(f"{SVG}rect"))  # type: ignore[arg-type]
    edges = []
    for path in root.iter(f"{SVG}path"):
        if path.get("class") == "edge":
            title = path.find(f"{SVG}title")
            assert title is not None and title.text
            source, _, target = title.text.partition(" -> ")
            edges.append((source, target, path.get("data-edge"), polyline(path.get("d", ""))))
    labels = []
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "label":
            text = group.find(f"{SVG}text")
            words = " ".join(text.itertext()) if text is not None else ""
            labels.append((group.get("data-edge"), words, rect_of(group.find(f"{SVG}rect"))))  # type: ignore[arg-type]
    return Picture(boxes, edges, labels)


def segment_enters(a: Point, b: Point, box: Rect) -> bool:
    """Whether the segment a-b passes through the inside of `box` (Liang-Barsky clipping)."""
    low, high = 0.0, 1.0
    dx, dy = b[0] - a[0], b[1] - a[1]
    for p, q in ((-dx, a[0] - box.left), (dx, box.right - a[0]), (-dy, a[1] - box.top), (dy, box.bottom - a[1])):
        if p == 0:
            if q < 0:
                return False
            continue
        r = q / p
        if p < 0:
            low = max(low, r)
        else:
            high = min(high, r)
        if low > high:
            return False
    return True


def distance(point: Point, box: Rect) -> float:
    dx = max(box.left - point[0], 0.0, point[0] - box.right)
    dy = max(box.top - point[1], 0.0, point[1] - box.bottom)
    return float((dx * dx + dy * dy) ** 0.5)


def truth_problems(svg: str) -> list[str]:
    """Every way the picture misleads, in words; empty when it tells the truth."""
    picture = read_picture(svg)
    problems = []
    for source, target, _, points in picture.edges:
        for name, box in picture.boxes.items():
            inside = box.shrunk(INSET)
            if any(segment_enters(a, b, inside) for a, b in zip(points, points[1:], strict=False)):
                problems.append(f"edge {source} -> {target} passes through box {name}")
    for index, (edge, text, rect) in enumerate(picture.labels):
        for name, box in picture.boxes.items():
            if rect.overlaps(box):
                problems.append(f"label {text!r} covers box {name}")
        for _, other_text, other in picture.labels[index + 1:]:
            if rect.overlaps(other):
                problems.append(f"label {text!r} covers label {other_text!r}")
        own = [points for _, _, number, points in picture.edges if number == edge]
        if not own or min(distance(point, rect) for point in own[0]) > BESIDE:
            problems.append(f"label {text!r} is not beside its own edge")
    return problems


def check_picture(graph: synthloom.Graph) -> None:
    svg = render_svg(graph)
    assert truth_problems(svg) == [], graph.name
    picture = read_picture(svg)
    assert set(picture.boxes) == set(graph.nodes)
    assert len(picture.edges) == sum(len(out) for out in graph.edges_from.values())
    labelled = [edge for out in graph.edges_from.values() for edge in out if edge.when or edge.max_visits]
    assert sorted(int(edge or -1) for edge, _, _ in picture.labels) == sorted(edge.index for edge in labelled)


@pytest.mark.parametrize("path", GRAPHS, ids=[path.stem for path in GRAPHS])
def test_every_shipped_graph_is_drawn_truthfully(path: Path) -> None:
    check_picture(synthloom.load(path))


def test_quickstart_skip_edges_run_beside_the_chain() -> None:
    """review -> pairs and revision_tags -> pairs skip the nodes between them: their lines must go round."""
    picture = read_picture(render_svg(synthloom.load("quickstart")))
    skips = [(source, target) for source, target, _, _ in picture.edges if target == "pairs"]
    assert ("review", "pairs") in skips and ("revision_tags", "pairs") in skips
    assert picture.boxes["review_revision"].top > picture.boxes["review"].bottom  # the chain is below review


def test_a_straight_line_through_a_box_is_caught() -> None:
    """The checker itself: the old drawing's skip edge (bottom of one box straight down to the top of the
    box two rows below) and a label laid on a box are reported."""
    svg = ('<svg xmlns="http://www.w3.org/2000/svg">'
           '<g class="node"><rect x="0" y="0" width="90" height="46"/><text>a</text></g>'
           '<g class="node"><rect x="0" y="110" width="90" height="46"/><text>b</text></g>'
           '<g class="node"><rect x="0" y="220" width="90" height="46"/><text>c</text></g>'
           '<path class="edge" data-edge="0" d="M45,46 C45,133 45,133 45,219"><title>a -&gt; c</title></path>'
           '<g class="label" data-edge="0"><rect x="40" y="120" width="60" height="18"/><text>x</text></g></svg>')
    assert truth_problems(svg) == ["edge a -> c passes through box b", "label 'x' covers box b"]


def random_graph(rng: random.Random) -> dict[str, Any]:
    """A random graph: a spine, skip edges, parallel edges, loops back (bounded), self-loops, long names and
    conditions of every length."""
    count = rng.randint(2, 10)
    names = [f"n{index}" + "_long" * rng.randint(0, 3) for index in range(count)]
    nodes = {name: {"type": "tests.plugins_for_tests:word_count"} for name in names}
    edges: list[Any] = []

    def condition() -> str | None:
        return rng.choice([None, None, "words > 3", "words < " + "1" * rng.randint(1, 60),
                           " and ".join(f"words != {n}" for n in range(rng.randint(1, 9)))])

    for index in range(1, count):
        for parent in rng.sample(range(index), k=min(index, rng.choice([1, 1, 2, 3]))):
            edge: dict[str, Any] = {"from": names[parent], "to": names[index]}
            if (when := condition()) is not None:
                edge["when"] = when
            edges.append(edge)
            if rng.random() < 0.1:
                edges.append({"from": names[parent], "to": names[index], "when": "words > 99"})
    for _ in range(rng.randint(0, 2)):
        if count > 2:
            later, earlier = rng.randint(2, count - 1), rng.randint(1, count - 2)
            if earlier < later:
                edges.append({"from": names[later], "to": names[earlier], "max_visits": 2,
                              **({"when": when} if (when := condition()) else {})})
    if rng.random() < 0.3 and count > 1:
        looped = names[rng.randint(1, count - 1)]
        edges.append({"from": looped, "to": looped, "max_visits": 3})
    return {"name": "random", "nodes": nodes, "edges": edges, "outputs": [{"name": "raw", "format": "raw"}]}


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_are_drawn_truthfully(seed: int, write_graph: Callable[..., Path]) -> None:
    spec = random_graph(random.Random(seed))
    path = write_graph(spec, [{"answer": "a few words"}], name=f"random{seed}.yaml")
    check_picture(synthloom.load(path))

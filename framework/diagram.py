"""A picture of a graph as SVG, drawn here so it needs no browser, no JavaScript and no network.

The layout is layered: the forward DAG's topological generations are the rows (a node sits one row
below its deepest parent), nodes in a row are ordered by their parents' mean position to keep edges
from crossing, and the back edges that close a loop are drawn as curves on the right of the boxes.
Every edge carries its `when:` condition and `max_visits`. Every name and condition is escaped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import networkx as nx
from markupsafe import Markup

from .graph import Edge, Graph
from .pages import render_page as render_template

CHAR_W = 7.2        # width of a character at the 12-13px font used, for sizing boxes and labels
BOX_H = 46
ROW_GAP = 64
COL_GAP = 36
MARGIN = 20
LABEL_H = 18
LOOP_SPACE = 30     # how far right of the widest box a loop's curve bends, per loop
ARROW = 8           # arrowhead length

Curve = tuple[str, tuple[float, float], tuple[float, float]]   # SVG path, its end, a point it comes from


@dataclass
class Box:
    name: str
    kind: str
    models: str
    x: float = 0.0      # left
    y: float = 0.0      # top
    width: float = 0.0

    @property
    def centre(self) -> float:
        return self.x + self.width / 2


def node_boxes(graph: Graph) -> dict[str, Box]:
    """One box per node, laid out in rows by topological generation."""
    boxes = {name: Box(name, str(graph.config.nodes[name]["type"]), ", ".join(sorted(node.models())))
             for name, node in graph.nodes.items()}
    for box in boxes.values():
        box.width = max(90.0, CHAR_W * max(len(box.name), len(_subtitle(box))) + 24)
    rows = [list(row) for row in nx.topological_generations(graph.dag)]
    order = {name: index for index, name in enumerate(graph.nodes)}
    placed: dict[str, float] = {}
    for row in rows:
        def weight(name: str) -> tuple[float, int]:
            parents = [placed[p] for p in graph.dag.predecessors(name) if p in placed]
            return (sum(parents) / len(parents) if parents else -1.0, order[name])
        row.sort(key=weight)
        for position, name in enumerate(row):
            placed[name] = position
    widths = [sum(boxes[name].width for name in row) + COL_GAP * (len(row) - 1) for row in rows]
    widest = max(widths, default=0.0)
    for number, (row, width) in enumerate(zip(rows, widths, strict=True)):
        x = MARGIN + (widest - width) / 2
        for name in row:
            boxes[name].x, boxes[name].y = x, MARGIN + number * (BOX_H + ROW_GAP)
            x += boxes[name].width + COL_GAP
    return boxes


def edge_label(edge: Edge) -> str:
    notes = [edge.when.source] if edge.when else []
    if edge.max_visits:
        notes.append(f"max_visits {edge.max_visits}")
    return " · ".join(notes)


def render_svg(graph: Graph) -> str:
    """The graph as one standalone SVG document (also valid inline in HTML)."""
    boxes = node_boxes(graph)
    edges = [edge for edges in graph.edges_from.values() for edge in edges]
    back = [edge for edge in edges if not graph.dag.has_edge(edge.source, edge.target)]
    paths: list[str] = []
    labels: list[tuple[float, float, float, str]] = []   # left, middle y, width, text
    siblings: dict[tuple[str, str], int] = {}
    for edge in (edge for edge in edges if edge not in back):
        pair = (edge.source, edge.target)
        repeat = siblings[pair] = siblings.get(pair, -1) + 1
        path, (x, y), leftward = _forward(boxes[edge.source], boxes[edge.target], repeat)
        paths.append(_path(edge, *path))
        if edge_label(edge):
            width = _label_width(edge)
            labels.append((x - width - 6 if leftward else x + 6, y, width, edge_label(edge)))
    right = max([box.x + box.width for box in boxes.values()] + [left + width for left, _, width, _ in labels],
                default=MARGIN)
    for number, edge in enumerate(back, start=1):
        bend = right + LOOP_SPACE * number
        path, (x, y) = _loop(boxes[edge.source], boxes[edge.target], bend)
        paths.append(_path(edge, *path))
        if edge_label(edge):
            labels.append((x + 4, y, _label_width(edge), edge_label(edge)))
    shift = max(0.0, MARGIN - min((left for left, _, _, _ in labels), default=MARGIN))
    extent = max([box.x + box.width for box in boxes.values()] + [left + width for left, _, width, _ in labels]
                 + [right + LOOP_SPACE * len(back)], default=MARGIN)
    width = extent + shift + MARGIN
    height = max((box.y + BOX_H for box in boxes.values()), default=MARGIN) + MARGIN
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'width="{width:.0f}" height="{height:.0f}" role="img" font-family="system-ui, sans-serif">',
             f"<title>{escape(graph.name)}</title>",
             f'<g transform="translate({shift:.1f},0)">', *paths]
    for box in boxes.values():
        parts.append(f'<g class="node"><rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
                     f'height="{BOX_H}" rx="6" fill="#eef4f9" stroke="#2f6690" stroke-width="1.4"/>'
                     f'<text x="{box.centre:.1f}" y="{box.y + 19:.1f}" font-size="13" font-weight="600" '
                     f'text-anchor="middle" fill="#1f2933">{escape(box.name)}</text>'
                     f'<text x="{box.centre:.1f}" y="{box.y + 36:.1f}" font-size="11.5" text-anchor="middle" '
                     f'fill="#52606d">{escape(_subtitle(box))}</text></g>')
    for left, y, label_width, text in labels:  # last, so a label is never hidden under a box or an edge
        parts.append(f'<rect x="{left:.1f}" y="{y - LABEL_H / 2:.1f}" width="{label_width:.1f}" height="{LABEL_H}" '
                     f'rx="3" fill="#fffbe6" stroke="#e6d9a8"/><text class="condition" '
                     f'x="{left + label_width / 2:.1f}" y="{y + 4:.1f}" font-size="12" text-anchor="middle" '
                     f'fill="#5c4b00">{escape(text)}</text>')
    parts.append("</g></svg>")
    return "\n".join(parts)


def _label_width(edge: Edge) -> float:
    return len(edge_label(edge)) * CHAR_W + 8


def _path(edge: Edge, curve: str, tip: tuple[float, float], towards: tuple[float, float]) -> str:
    """An edge's curve (dashed when a condition decides whether it is taken) and its arrowhead, drawn as
    a triangle at `tip` pointing from `towards` (no markers: the page needs no url() references)."""
    style = ' stroke-dasharray="5 3"' if edge.when else ""
    dx, dy = tip[0] - towards[0], tip[1] - towards[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    back = (tip[0] - ARROW * ux, tip[1] - ARROW * uy)
    half = ARROW / 2
    corners = [tip, (back[0] - half * uy, back[1] + half * ux), (back[0] + half * uy, back[1] - half * ux)]
    head = " ".join(f"{x:.1f},{y:.1f}" for x, y in corners)
    return (f'<path class="edge" d="{curve}" fill="none" stroke="#52606d" stroke-width="1.4"{style}>'
            f"<title>{escape(edge.source)} -&gt; {escape(edge.target)}</title></path>"
            f'<polygon class="arrow" points="{head}" fill="#52606d"/>')


def _subtitle(box: Box) -> str:
    return f"{box.kind} · {box.models}" if box.models else box.kind


def _forward(source: Box, target: Box, repeat: int) -> tuple[Curve, tuple[float, float], bool]:
    """From the bottom of the source to the top of the target; a repeated pair bows out to the side.
    Gives the path, the curve's middle, and whether it runs leftward (its label then goes on its left)."""
    x1, y1 = source.centre, source.y + BOX_H
    x2, y2 = target.centre, target.y
    bow = 40.0 * repeat * (1 if repeat % 2 else -1)
    middle_y = (y1 + y2) / 2
    path = (f"M{x1:.1f},{y1:.1f} C{x1 + bow:.1f},{middle_y:.1f} {x2 + bow:.1f},{middle_y:.1f} "
            f"{x2:.1f},{y2 - 1:.1f}")
    curve = (path, (x2, y2 - 1), (x2 + bow, middle_y))
    return curve, ((x1 + x2) / 2 + bow * 0.75, middle_y), x2 + bow < x1 - 1


def _loop(source: Box, target: Box, bend: float) -> tuple[Curve, tuple[float, float]]:
    """A back edge (or a node's edge to itself): out of the source's right side, round to the target's."""
    x1, y1 = source.x + source.width, source.y + BOX_H / 2 + 6
    x2, y2 = target.x + target.width, target.y + BOX_H / 2 - 6
    path = f"M{x1:.1f},{y1:.1f} C{bend:.1f},{y1:.1f} {bend:.1f},{y2:.1f} {x2 + 1:.1f},{y2:.1f}"
    return (path, (x2 + 1, y2), (bend, y2)), (0.75 * bend + 0.125 * (x1 + x2), (y1 + y2) / 2)


def render_page(graph: Graph) -> str:
    """A self-contained HTML page: the diagram, then the nodes, edges, seed and outputs as tables."""
    source = graph.config.seed.source
    nodes = [{"name": name, "type": str(graph.config.nodes[name]["type"]), "models": ", ".join(sorted(node.models())),
              "reads": ", ".join(sorted(node.reads())), "writes": ", ".join(sorted(node.writes()))}
             for name, node in graph.nodes.items()]
    edges = [{"source": edge.source, "target": edge.target, "when": edge.when.source if edge.when else "",
              "max_visits": edge.max_visits or ""} for edges in graph.edges_from.values() for edge in edges]
    outputs = [{"name": output.name, "format": output.format, "when": output.when or ""}
               for output in graph.config.outputs]
    seed = ", ".join(f"{key}: {value}" for key, value in source.model_dump(exclude_none=True).items()
                    if not isinstance(value, (list, dict)))
    return render_template("graph.html", name=graph.name, description=graph.config.description or "",
                  svg=Markup(render_svg(graph)), nodes=nodes, edges=edges, outputs=outputs, seed=seed)

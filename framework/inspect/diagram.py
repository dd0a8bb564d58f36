"""A picture of a graph as SVG, drawn here so it needs no browser, no JavaScript and no network.

The picture must not lie about what leads where, so it is a layered drawing in which no edge passes
through a box it does not connect and no label sits on a box or on another label:

- The rows are the forward DAG's topological generations (a node sits one row below its deepest parent).
- An edge that spans rows (a skip edge, or a back edge closing a loop) gets a waypoint of its own in each
  row it crosses, placed between the boxes like a thin node, so it runs down a lane beside them. Inside a
  row an edge is a straight line through its waypoint; between rows it is a curve that stays in the gap.
- Rows are ordered by their neighbours' mean position (sweeps down and up, keeping the order with the
  fewest crossings), and each row is centred under its parents.
- A back edge leaves the top of its source and enters the bottom of its target; a node's edge to itself
  is a small loop on its box's right, in room kept free for it (and its label).
- Each `when:` / `max_visits` label sits in the first gap its edge crosses, in a slot of its own (the gap
  grows to hold them), just beside its edge.

Every name and condition is escaped.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape

import networkx as nx
from markupsafe import Markup

from ..graph.runnable import Edge, Graph
from .pages import render_page as render_template

CHAR_W = 7.2        # width of a character at the 12-13px font used, for sizing boxes and labels
BOX_H = 46
ROW_GAP = 64        # the least gap between two rows; a gap holding labels grows to fit them
COL_GAP = 36        # between two boxes in a row
LANE_GAP = 16       # between an edge's waypoint and its neighbour in a row
MARGIN = 20
LABEL_H = 18        # a one-line label; each further line adds LINE_H
LINE_H = 15
LABEL_CHARS = 44    # a longer condition wraps (at spaces) onto more lines
LABEL_SEP = 8       # between labels stacked in one gap
LABEL_CLEAR = 5     # between a label and its own edge
PORT_GAP = 12       # between edges meeting one side of a box
LOOP_W = 26         # how far right of its box a node's edge to itself reaches
ARROW = 8           # arrowhead length
SWEEPS = 6          # ordering passes (each one down and one up)

Item = str | tuple[int, int]    # a node's name, or (edge index, row): an edge's waypoint in a row it crosses
Point = tuple[float, float]


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


@dataclass
class Route:
    """How one edge is drawn: the items it passes, from its source to its target."""

    edge: Edge
    items: list[Item]
    back: bool
    path: str = ""
    tip: Point = (0.0, 0.0)         # the arrowhead's point
    towards: Point = (0.0, 0.0)     # a point the arrow comes from
    gaps: list[tuple[int, Point, Point]] = field(default_factory=list)  # (gap, start, end) of each curve


@dataclass
class Label:
    left: float
    middle: float       # y of its centre line
    text: str
    edge: int
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = self.lines or [self.text]

    @property
    def width(self) -> float:
        return max(len(line) for line in self.lines) * CHAR_W + 8

    @property
    def height(self) -> float:
        return LABEL_H + LINE_H * (len(self.lines) - 1)


def wrapped(text: str) -> list[str]:
    """A long condition as lines of at most LABEL_CHARS, broken at spaces (a very long word is cut)."""
    return textwrap.wrap(text, LABEL_CHARS, break_on_hyphens=False) or [text]


def edge_label(edge: Edge) -> str:
    notes = [edge.when.source] if edge.when else []
    if edge.max_visits:
        notes.append(f"max_visits {edge.max_visits}")
    return " · ".join(notes)


class Layout:
    """Where every box, edge and label goes (see the module docstring)."""

    def __init__(self, graph: Graph):
        self.boxes = {name: Box(name, str(graph.config.nodes[name]["type"]), ", ".join(sorted(node.models())))
                      for name, node in graph.nodes.items()}
        for box in self.boxes.values():
            box.width = max(90.0, CHAR_W * max(len(box.name), len(_subtitle(box))) + 24)
        generations = [list(row) for row in nx.topological_generations(graph.dag)]
        self.row_of: dict[Item, int] = {name: number for number, row in enumerate(generations) for name in row}
        order: dict[Item, int] = {name: index for index, name in enumerate(graph.nodes)}
        self.rows: list[list[Item]] = [sorted(row, key=order.__getitem__) for row in generations]
        edges = sorted((edge for out in graph.edges_from.values() for edge in out), key=lambda edge: edge.index)
        self.routes = [self._route(edge, graph) for edge in edges]
        self.loops = [route for route in self.routes if route.edge.source == route.edge.target]
        self.right_room = {name: 0.0 for name in self.boxes}   # room a self-loop (and its label) keeps free
        for route in self.loops:
            label = edge_label(route.edge)
            room = LOOP_W + 4 + (Label(0, 0, label, 0).width + 4 if label else 0)
            self.right_room[route.edge.source] = max(self.right_room[route.edge.source], room)
        self.up: dict[Item, list[Item]] = {}
        self.down: dict[Item, list[Item]] = {}
        for route in self.routes:
            chain = route.items[::-1] if route.back else route.items
            for upper, lower in zip(chain, chain[1:], strict=False):
                self.down.setdefault(upper, []).append(lower)
                self.up.setdefault(lower, []).append(upper)
        self._order()
        self.x: dict[Item, float] = {}
        self._place_across()
        self.labels: list[Label] = []
        self._place_down()
        self._draw_routes()
        self._place_labels()

    def _route(self, edge: Edge, graph: Graph) -> Route:
        if edge.source == edge.target:
            return Route(edge, [edge.source], back=True)
        back = not graph.dag.has_edge(edge.source, edge.target)
        upper, lower = (edge.target, edge.source) if back else (edge.source, edge.target)
        waypoints: list[Item] = []
        for row in range(self.row_of[upper] + 1, self.row_of[lower]):
            waypoint = (edge.index, row)
            self.row_of[waypoint] = row
            self.rows[row].append(waypoint)
            waypoints.append(waypoint)
        chain: list[Item] = [upper, *waypoints, lower]
        return Route(edge, chain[::-1] if back else chain, back)

    # -- order within rows ---------------------------------------------------------------------------------

    def _order(self) -> None:
        """Barycentre sweeps; the order with the fewest crossings between rows wins."""
        best, fewest = [list(row) for row in self.rows], self._crossings()
        position = {item: index for row in self.rows for index, item in enumerate(row)}
        for _ in range(SWEEPS):
            for numbers, neighbours in ((range(1, len(self.rows)), self.up),
                                        (range(len(self.rows) - 2, -1, -1), self.down)):
                for number in numbers:
                    self._sort_row(number, neighbours, position)
                crossings = self._crossings()
                if crossings < fewest:
                    best, fewest = [list(row) for row in self.rows], crossings
        self.rows = best

    def _sort_row(self, number: int, neighbours: dict[Item, list[Item]], position: dict[Item, int]) -> None:
        """Order a row by its items' mean neighbour position (`position` is kept up to date)."""
        def barycentre(item: Item) -> float:
            near = neighbours.get(item, [])
            return sum(position[other] for other in near) / len(near) if near else float(position[item])

        row = self.rows[number]
        row.sort(key=lambda item: (barycentre(item), position[item]))
        position.update((item, index) for index, item in enumerate(row))

    def _crossings(self) -> int:
        position = {item: index for row in self.rows for index, item in enumerate(row)}
        count = 0
        for row in self.rows:
            pairs = [(position[upper], position[lower]) for upper in row for lower in self.down.get(upper, [])]
            count += sum(1 for i, (a1, b1) in enumerate(pairs) for a2, b2 in pairs[i + 1:] if (a1 - a2) * (b1 - b2) < 0)
        return count

    # -- x: each row centred under (or over) its neighbours, items kept apart -----------------------------

    def _extent(self, item: Item) -> tuple[float, float]:
        """Room an item takes left and right of its centre line."""
        if isinstance(item, tuple):
            return 0.0, 0.0
        half = self.boxes[item].width / 2
        return half, half + self.right_room[item]

    def _separation(self, left: Item, right: Item) -> float:
        both_boxes = isinstance(left, str) and isinstance(right, str)
        return self._extent(left)[1] + self._extent(right)[0] + (COL_GAP if both_boxes else LANE_GAP)

    def _place_across(self) -> None:
        for row in self.rows:
            self._pack(row, {item: 0.0 for item in row})
        for _ in range(SWEEPS):
            for numbers, neighbours in ((range(1, len(self.rows)), self.up),
                                        (range(len(self.rows) - 2, -1, -1), self.down)):
                for number in numbers:
                    row = self.rows[number]
                    self._pack(row, {item: _mean(self.x[other] for other in neighbours[item])
                                     if neighbours.get(item) else self.x[item] for item in row})
        for number in range(1, len(self.rows)):   # end with every row under its parents
            row = self.rows[number]
            self._pack(row, {item: _mean(self.x[other] for other in self.up[item]) if self.up.get(item)
                             else self.x[item] for item in row})

    def _pack(self, row: list[Item], wanted: dict[Item, float]) -> None:
        """Each item at its wanted x or right of its left neighbour, then the row shifted so that boxes sit,
        on average, where they want to be (a waypoint gives way to a box)."""
        placed: list[float] = []
        for index, item in enumerate(row):
            x = wanted[item]
            if index:
                x = max(x, placed[-1] + self._separation(row[index - 1], item))
            placed.append(x)
        weights = [1.0 if isinstance(item, str) else 0.25 for item in row]
        shift = sum(weight * (x - wanted[item]) for weight, x, item in zip(weights, placed, row, strict=True)) \
            / sum(weights) if row else 0.0
        for item, x in zip(row, placed, strict=True):
            self.x[item] = x - shift

    # -- y: rows, and gaps tall enough for their labels ---------------------------------------------------

    def _label_gap(self, route: Route) -> int:
        """The first gap an edge crosses: below its source, or above it for a back edge."""
        row = self.row_of[route.edge.source]
        return row - 1 if route.back else row

    def _place_down(self) -> None:
        labelled = [route for route in self.routes if edge_label(route.edge) and route not in self.loops]
        self.gap_labels = [[route for route in labelled if self._label_gap(route) == number]
                           for number in range(max(len(self.rows) - 1, 0))]
        self.gap = [max(float(ROW_GAP), sum(LABEL_SEP + Label(0, 0, edge_label(route.edge), 0,
                                                               wrapped(edge_label(route.edge))).height
                                             for route in routes) + 2 * LABEL_SEP)
                    for routes in self.gap_labels]
        self.top = [float(MARGIN)]
        for height in self.gap:
            self.top.append(self.top[-1] + BOX_H + height)
        for name, box in self.boxes.items():
            box.x, box.y = self.x[name] - box.width / 2, self.top[self.row_of[name]]

    # -- edges ----------------------------------------------------------------------------------------

    def _ports(self) -> dict[tuple[int, Item], float]:
        """Where each edge meets a box: edges meeting one side are spread along it, ordered by where they
        go, so that two edges between the same boxes are two lines."""
        sides: dict[tuple[str, str], list[tuple[float, int, Item]]] = {}
        for route in self.routes:
            if len(route.items) < 2:
                continue
            for end, neighbour in ((route.items[0], route.items[1]), (route.items[-1], route.items[-2])):
                side = "top" if self.row_of[neighbour] < self.row_of[end] else "bottom"
                sides.setdefault((str(end), side), []).append((self.x[neighbour], route.edge.index, end))
        ports: dict[tuple[int, Item], float] = {}
        for (name, _), attached in sides.items():
            attached.sort(key=lambda entry: entry[:2])
            count = len(attached)
            spacing = min(PORT_GAP, (self.boxes[name].width - 20) / max(count - 1, 1))
            for place, (_, index, end) in enumerate(attached):
                ports[(index, end)] = self.x[name] + (place - (count - 1) / 2) * spacing
        return ports

    def _draw_routes(self) -> None:
        ports = self._ports()
        for route in self.routes:
            if len(route.items) == 1:
                self._draw_loop(route)
                continue
            start, *waypoints, end = route.items
            upward = route.back
            x = ports[(route.edge.index, start)]
            y = self.top[self.row_of[start]] + (0.0 if upward else BOX_H)
            commands = [f"M{x:.1f},{y:.1f}"]
            for item in [*waypoints, end]:
                row = self.row_of[item]
                next_x = ports[(route.edge.index, item)] if item == end else self.x[item]
                near, far = (self.top[row] + BOX_H, self.top[row]) if upward else (self.top[row], self.top[row] + BOX_H)
                next_y = near + (1 if upward else -1) * (item == end)   # an arrow's tip stops short of its box
                middle = (y + next_y) / 2
                commands.append(f"C{x:.1f},{middle:.1f} {next_x:.1f},{middle:.1f} {next_x:.1f},{next_y:.1f}")
                route.gaps.append((row if upward else row - 1, (x, y), (next_x, next_y)))
                route.tip, route.towards = (next_x, next_y), (next_x, middle)
                x, y = next_x, next_y
                if item != end:   # straight through the row, in the waypoint's lane
                    y = far
                    commands.append(f"L{x:.1f},{y:.1f}")
            route.path = " ".join(commands)

    def _draw_loop(self, route: Route) -> None:
        box = self.boxes[route.edge.source]
        right, y = box.x + box.width, box.y
        route.path = (f"M{right:.1f},{y + 14:.1f} C{right + LOOP_W:.1f},{y + 6:.1f} {right + LOOP_W:.1f},"
                      f"{y + BOX_H - 6:.1f} {right + 1:.1f},{y + BOX_H - 14:.1f}")
        route.tip, route.towards = (right + 1, y + BOX_H - 14), (right + LOOP_W, y + BOX_H - 6)
        label = edge_label(route.edge)
        if label:
            self.labels.append(Label(right + LOOP_W + 4, y + BOX_H / 2, label, route.edge.index))

    def _place_labels(self) -> None:
        """Each label in a slot of its own in its gap, just clear of its edge, on the side the edge heads."""
        for number, routes in enumerate(self.gap_labels):
            curves = [(route, next(curve for curve in route.gaps if curve[0] == number)) for route in routes]
            curves.sort(key=lambda entry: (entry[1][1][0], entry[0].edge.index))
            labels = [Label(0, 0, edge_label(route.edge), route.edge.index, wrapped(edge_label(route.edge)))
                      for route, _ in curves]
            stacked = sum(label.height for label in labels) + LABEL_SEP * (len(labels) - 1)
            y = self.top[number] + BOX_H + (self.gap[number] - stacked) / 2
            for label, (_, (_, start, end)) in zip(labels, curves, strict=True):
                label.middle = y + label.height / 2
                y += label.height + LABEL_SEP
                xs = [_curve_x(start, end, at) for at in _steps(label.middle - label.height / 2 - 2,
                                                                label.middle + label.height / 2 + 2)]
                label.left = min(xs) - LABEL_CLEAR - label.width if end[0] < start[0] - 1 else \
                    max(xs) + LABEL_CLEAR
                self.labels.append(label)

    def bounds(self) -> tuple[float, float, float]:
        """The drawing's left and right edges and its bottom."""
        xs = [box.x for box in self.boxes.values()] + [box.x + box.width + self.right_room[name]
                                                        for name, box in self.boxes.items()]
        xs += [label.left for label in self.labels] + [label.left + label.width for label in self.labels]
        xs += [self.x[item] for row in self.rows for item in row]
        bottom = max((box.y + BOX_H for box in self.boxes.values()), default=MARGIN)
        return min(xs, default=MARGIN), max(xs, default=MARGIN), bottom


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def _steps(low: float, high: float, count: int = 9) -> list[float]:
    return [low + (high - low) * step / (count - 1) for step in range(count)]


def _curve_x(start: Point, end: Point, y: float) -> float:
    """x where the gap curve from `start` to `end` (vertical at both ends) is at height `y`."""
    (x0, y0), (x3, y3) = start, end
    if y3 == y0:
        return x0
    share = min(max((y - y0) / (y3 - y0), 0.0), 1.0)
    low, high = 0.0, 1.0
    for _ in range(30):   # y(t) = y0 + (y3 - y0) * (1.5t - 1.5t^2 + t^3) rises steadily: bisect for t
        t = (low + high) / 2
        if 1.5 * t - 1.5 * t * t + t ** 3 < share:
            low = t
        else:
            high = t
    t = (low + high) / 2
    return x0 + (x3 - x0) * (3 * t * t - 2 * t ** 3)


def render_svg(graph: Graph, links: Mapping[str, str] | None = None) -> str:
    """The graph as one standalone SVG document (also valid inline in HTML). `links`: node name -> the URL
    its box links to (the studio links each node to its steps in a trace)."""
    layout = Layout(graph)
    left, right, bottom = layout.bounds()
    shift = MARGIN - left
    width, height = right - left + 2 * MARGIN, bottom + MARGIN
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'width="{width:.0f}" height="{height:.0f}" role="img" font-family="system-ui, sans-serif">',
             f"<title>{escape(graph.name)}</title>",
             f'<g transform="translate({shift:.1f},0)">']
    parts += [_path(route) for route in layout.routes]
    for box in layout.boxes.values():
        link = (links or {}).get(box.name)
        if link is not None:
            parts.append(f'<a href="{escape(link)}">')
        parts.append(f'<g class="node"><rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
                     f'height="{BOX_H}" rx="6" fill="#eef4f9" stroke="#2f6690" stroke-width="1.4"/>'
                     f'<text x="{box.centre:.1f}" y="{box.y + 19:.1f}" font-size="13" font-weight="600" '
                     f'text-anchor="middle" fill="#1f2933">{escape(box.name)}</text>'
                     f'<text x="{box.centre:.1f}" y="{box.y + 36:.1f}" font-size="11.5" text-anchor="middle" '
                     f'fill="#52606d">{escape(_subtitle(box))}</text></g>')
        if link is not None:
            parts.append("</a>")
    for label in layout.labels:  # last, so a label is never hidden under an edge
        top, centre = label.middle - label.height / 2, label.left + label.width / 2
        if len(label.lines) == 1:
            text = escape(label.text)
        else:
            text = "".join(f'<tspan x="{centre:.1f}" dy="{0 if number == 0 else LINE_H}">{escape(line)}</tspan>'
                           for number, line in enumerate(label.lines))
        parts.append(f'<g class="label" data-edge="{label.edge}"><title>{escape(label.text)}</title>'
                     f'<rect x="{label.left:.1f}" y="{top:.1f}" width="{label.width:.1f}" '
                     f'height="{label.height:.0f}" rx="3" fill="#fffbe6" stroke="#e6d9a8"/><text class="condition" '
                     f'x="{centre:.1f}" y="{top + 13:.1f}" font-size="12" text-anchor="middle" '
                     f'fill="#5c4b00">{text}</text></g>')
    parts.append("</g></svg>")
    return "\n".join(parts)


def _path(route: Route) -> str:
    """An edge's curve (dashed when a condition decides whether it is taken) and its arrowhead, drawn as
    a triangle at its tip (no markers: the page needs no url() references)."""
    edge = route.edge
    style = ' stroke-dasharray="5 3"' if edge.when else ""
    (tip_x, tip_y), (from_x, from_y) = route.tip, route.towards
    length = math.hypot(tip_x - from_x, tip_y - from_y) or 1.0
    ux, uy = (tip_x - from_x) / length, (tip_y - from_y) / length
    back = (tip_x - ARROW * ux, tip_y - ARROW * uy)
    half = ARROW / 2
    corners = [route.tip, (back[0] - half * uy, back[1] + half * ux), (back[0] + half * uy, back[1] - half * ux)]
    head = " ".join(f"{x:.1f},{y:.1f}" for x, y in corners)
    return (f'<path class="edge" data-edge="{edge.index}" d="{route.path}" fill="none" stroke="#52606d" '
            f'stroke-width="1.4"{style}><title>{escape(edge.source)} -&gt; {escape(edge.target)}</title></path>'
            f'<polygon class="arrow" points="{head}" fill="#52606d"/>')


def _subtitle(box: Box) -> str:
    return f"{box.kind} · {box.models}" if box.models else box.kind


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

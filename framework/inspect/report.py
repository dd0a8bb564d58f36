"""`synthloom report`: one self-contained HTML page about a finished run, or two runs side by side.

The page works offline and runs no code: plots are inline SVG, the stylesheet is inline, and a
Content-Security-Policy forbids scripts and remote loads. This module turns a run's figures into plain
values (cells, tables, plot geometry); `page_templates/report.html` lays them out, with Jinja2's
autoescape on, so every string from a run (records, node names, error messages) is escaped.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..graph.load import load
from ..graph.runnable import Graph
from .card import run_graph
from .diagram import render_svg
from .metrics import PAIR_SAMPLE, TEXT_SAMPLE, StreamHistogram
from .pages import render_page
from .report_data import OutputSummary, ReportError, RunSummary, read_run

REPORT = "report.html"
COLORS = ("#2f6690", "#c8553d")
TRUNCATE = 360
BINS = 20


def build_report(output_dir: str | Path, compare: str | Path | None = None,
                 graph: Graph | str | Path | None = None, to: str | Path | None = None,
                 allow_read: Sequence[str | Path] = ()) -> Path:
    """Write the report of a run (with `compare`, both runs side by side) with the picture of `graph`, or of
    the graph file the run's manifest names, to `to`; return its path. By default it is
    `<output_dir>/report.html`, and a comparison `<output_dir>/report-vs-<other dir>.html`, so comparing
    never overwrites the run's own report. `allow_read`: as for `synthloom.load`, to load the graph."""
    runs = [read_run(output_dir)] + ([read_run(compare)] if compare is not None else [])
    if graph is None:  # the graph file the manifest names, while it is still there and loads
        graph = run_graph(runs[0].manifest, allow_read)
    elif not isinstance(graph, Graph):
        graph = load(graph, run_folder_code=False, allow_read=list(allow_read))  # a picture needs no code run
    path = Path(to) if to is not None else Path(output_dir) / report_name(compare)
    try:
        path.write_text(render(runs, graph), encoding="utf-8")
    except OSError as error:
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def report_name(compare: str | Path | None = None) -> str:
    """`report.html`, or `report-vs-<other run's dir name>.html` (a plain file name) for a comparison."""
    if compare is None:
        return REPORT
    other = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(compare).resolve().name).strip("_") or "other"
    return f"report-vs-{other}.html"


# -- what the template shows ------------------------------------------------------------------------

@dataclass
class Cell:
    """A table cell: `text` is escaped by the template; the other fields say how to show it."""

    text: str
    style: str = ""      # "", "bold", "muted" or "badge"
    note: str = ""       # small text after it (a status message)
    more: int = 0        # the full length, when `text` was cut
    link: str = ""       # an anchor in the page (a record's trace)


CellLike = Cell | str


@dataclass
class Table:
    caption: str
    head: list[str]
    rows: list[list[CellLike]]
    empty: str | None = None      # said when there are no rows; None shows nothing
    note: str = ""
    cls: str = ""
    swatch: int | None = None


@dataclass
class FigureRow:
    label: str
    note: str
    cells: list[CellLike]


@dataclass
class Plot:
    """A histogram's geometry in SVG units; the template draws it."""

    width: int
    height: int
    left: int
    right: int
    color: str
    grid: list[tuple[float, str]] = field(default_factory=list)                       # y, label
    bars: list[tuple[float, float, float, float, str]] = field(default_factory=list)  # x, y, w, h, title
    ticks: list[tuple[float, str]] = field(default_factory=list)                      # x, label


@dataclass
class Histogram:
    caption: str
    swatch: int
    stats: str = ""
    plot: Plot | None = None


def render(runs: Sequence[RunSummary], graph: Graph | None = None) -> str:
    first = runs[0].manifest
    return render_page(
        "report.html", runs=runs, compare=len(runs) > 1, colors=COLORS,
        graph_name=first.get("graph", "?"), summary=_summary(runs), outputs=_outputs(runs),
        losses=[_losses(run, index) for index, run in enumerate(runs)],
        costs=[_costs(run, index) for index, run in enumerate(runs)],
        examples=[table for index, run in enumerate(runs) for table in _examples(run, index)],
        traces=[trace for index, run in enumerate(runs) for trace in _traces(run, index)],
        diagram=Markup(render_svg(graph)) if graph is not None else None,
        seconds=_seconds)


# -- sections ---------------------------------------------------------------------------------------

def _summary(runs: Sequence[RunSummary]) -> list[FigureRow]:
    def per_output(run: RunSummary) -> CellLike:
        outputs = run.counts.get("outputs") or {}
        return ", ".join(f"{name} {_num(count)}" for name, count in outputs.items()) or "–"

    def status(run: RunSummary) -> CellLike:
        message = run.manifest.get("message")
        return Cell(str(run.manifest.get("status", "?")), "badge", note=str(message) if message else "")

    def models(run: RunSummary) -> Any:
        return run.manifest["models"].values()

    rows: list[tuple[str, Callable[[RunSummary], CellLike]]] = [
        ("status", status),
        ("records seeded", lambda run: _num(run.counts.get("seeded"))),
        ("records written", lambda run: Cell(_num(run.counts.get("written")), "bold")),
        ("lines per output", per_output),
        ("records failed", lambda run: _num(run.counts.get("failed"))),
        ("records dropped", lambda run: _num(run.counts.get("dropped"))),
        ("resumed from journal", lambda run: _num(run.counts.get("resumed_from_journal"))),
        ("LLM calls", lambda run: _num(_total(models(run), "calls"))),
        ("tokens (prompt + completion)", lambda run: _num(_total(models(run), "prompt_tokens")
                                                          + _total(models(run), "completion_tokens"))),
        ("cost", lambda run: _cost(_total(models(run), "cost_usd"))),
    ]
    return [FigureRow(label, "", [cell(run) for run in runs]) for label, cell in rows]


@dataclass
class OutputView:
    name: str
    field: str
    diversity: list[FigureRow]
    histograms: list[Histogram]
    constant: list[str]
    unreadable: int


def _outputs(runs: Sequence[RunSummary]) -> list[OutputView]:
    views = []
    for name in _output_names(runs):
        found = [_find_output(run, name) for run in runs]
        text_field = next((o.text_field for o in found if o and o.text_field), None)
        figures = [(f"length of {text_field or 'text'} (words)", [o.lengths if o else None for o in found])]
        if any(o and o.rejected_lengths.n for o in found):
            figures.append(("length of rejected (words)", [o.rejected_lengths if o else None for o in found]))
        constant = []
        for key in dict.fromkeys(k for o in found if o for k in o.numbers):
            hists = [o.numbers.get(key) if o else None for o in found]
            values = {h.low for h in hists if h and h.n} | {h.high for h in hists if h and h.n}
            if len(values) == 1:  # a histogram of one bar says less than a line
                constant.append(f"metadata.{key} = {_value(values.pop())}")
            else:
                figures.append((f"metadata.{key}", hists))
        views.append(OutputView(name, text_field or "none found", _diversity(found),
                                [figure for caption, hists in figures for figure in _histograms(caption, hists)],
                                constant, sum(o.unreadable for o in found if o)))
    return views


def _diversity(found: list[OutputSummary | None]) -> list[FigureRow]:
    def of(get: Callable[[Any], CellLike]) -> list[CellLike]:
        return [get(output.diversity) if output and output.diversity else "–" for output in found]

    def embedding(d: Any) -> CellLike:
        return _ratio(d.embedding) if d.embedding_installed else Cell("not installed", "muted")

    return [
        FigureRow("texts", "", of(lambda d: _num(d.texts))),
        FigureRow("distinct-1 / 2 / 3", f"corpus-level, sample of ≤{TEXT_SAMPLE}",
                  of(lambda d: " / ".join(_ratio(d.distinct[n]) for n in (1, 2, 3)))),
        FigureRow("self-BLEU", f"lower is more diverse, sample of ≤{PAIR_SAMPLE}", of(lambda d: _ratio(d.self_bleu))),
        FigureRow("gzip compression ratio", f"lower is more diverse, sample of ≤{TEXT_SAMPLE}",
                  of(lambda d: _ratio(d.compression))),
        FigureRow("embedding diversity", f"mean pairwise cosine distance, ≤{PAIR_SAMPLE}", of(embedding)),
    ]


def _histograms(caption: str, hists: list[StreamHistogram | None]) -> list[Histogram]:
    """One figure per run, on shared bins so the two runs read alike."""
    present = [h for h in hists if h is not None and h.n]
    edges, centred = _bin_edges(present) if present else ([], False)
    figures = []
    for index, hist in enumerate(hists):
        if hist is None or not hist.n:
            figures.append(Histogram(caption, index))
            continue
        stats = (f"n {_num(hist.n)} · mean {_value(hist.mean)} · median {_value(hist.quantile(0.5))} · "
                 f"range {_value(hist.low)} to {_value(hist.high)}")
        figures.append(Histogram(caption, index, stats, _plot(hist, edges, centred, COLORS[index % 2])))
    return figures


def _losses(run: RunSummary, index: int) -> dict[str, Any]:
    failures = run.reasons("failure_types")
    drops = run.reasons("drop_reasons")
    overview = [
        Table("Failures by node and error", ["node", "error type", "records"],
              [[n, r, _num(c)] for n, r, c in failures], "No record failed."),
        Table("Drops by node and reason", ["node", "reason", "records"],
              [[n, r, _num(c)] for n, r, c in drops], "No record was dropped."),
        Table("Duplicates removed, by dedup node", ["dedup node", "removed", "seen", "rate"],
              [[n, _num(c), _num(s), _percent(c / s if s else None)] for n, c, s in run.duplicates()],
              "No drop reason names a duplicate."),
    ]
    samples = [
        Table(f"First failed records (of {_num(run.counts.get('failed'))}, from failed.jsonl)",
              ["node", "error", "message", "seed"],
              [[_plain(row.get("node")), _plain(row.get("error_type")), _text(row.get("message")),
                _text(row.get("seed"))] for row in run.failed], cls="long"),
        Table(f"First dropped records (of {_num(run.counts.get('dropped'))}, from dropped.jsonl)",
              ["node", "reason", "detail"],
              [[_plain(row.get("node")), _plain(row.get("reason")), _text(row.get("detail", ""))]
               for row in run.dropped], cls="long"),
    ]
    return {"run": run, "index": index, "overview": overview, "samples": samples}


def _costs(run: RunSummary, index: int) -> dict[str, Any]:
    head = ["calls", "cached", "retries", "prompt tok", "completion tok", "p50", "p95", "p99", "cost"]

    def usage(stats: dict[str, Any]) -> list[CellLike]:
        latency = _dict(stats.get("latency_s"))
        return [_num(stats.get("calls")), _num(stats.get("cached")), _num(stats.get("retries")),
                _num(stats.get("prompt_tokens")), _num(stats.get("completion_tokens")),
                _seconds(latency.get("p50")), _seconds(latency.get("p95")), _seconds(latency.get("p99")),
                _cost(stats.get("cost_usd"))]

    nodes, models, concurrency = (run.manifest[key] for key in ("nodes", "models", "concurrency"))
    node_rows: list[list[CellLike]] = [
        [name, _num(s.get("steps")), _num(s.get("failures")), _num(s.get("drops")), *usage(_dict(s.get("llm")))]
        for name, s in nodes.items() if isinstance(s, dict)]
    model_rows: list[list[CellLike]] = [[name, *usage(s), _num(_dict(concurrency.get(name)).get("peak"))]
                                        for name, s in models.items() if isinstance(s, dict)]
    return {"run": run, "index": index, "tables": [
        Table("Per node", ["node", "steps", "failed", "dropped", *head], node_rows, "No node ran.",
              note="latency of LLM calls", cls="stats"),
        Table("Per model", ["model", *head, "peak concurrency"], model_rows, "No model was called.", cls="stats")]}


def _examples(run: RunSummary, index: int) -> list[Table]:
    tables = []
    anchors = _trace_anchors(run, index)
    for output in run.outputs:
        columns = list(dict.fromkeys(key for row in output.examples for key in row))
        rows: list[list[CellLike]] = []
        for number, (row, record_id) in enumerate(zip(output.examples, output.example_ids, strict=True), start=1):
            anchor = anchors.get(record_id) if record_id is not None else None
            first = Cell(_num(number), link=anchor) if anchor else _num(number)
            rows.append([first, *(_text(row.get(column, "")) for column in columns)])
        note = f"first {len(rows)} records" + (", # links to a record's trace" if anchors else "")
        tables.append(Table(f"{output.name}.jsonl", ["#", *columns], rows, "No records.", note=note,
                            cls="long numbered", swatch=index))
    return tables


def _trace_anchors(run: RunSummary, index: int) -> dict[str, str]:
    """An in-page anchor per traced example record (record ids may hold any character, so they are numbered)."""
    return {record_id: f"trace-{index}-{number}" for number, record_id in enumerate(run.traces)}


def _traces(run: RunSummary, index: int) -> list[dict[str, Any]]:
    anchors = _trace_anchors(run, index)
    views = []
    for record_id, steps in run.traces.items():
        rows: list[list[CellLike]] = []
        for step in steps:
            outcome = (f"DROP {step['drop']}" if step.get("drop") else f"FAILED {step['error']}" if step.get("error")
                       else step.get("output"))
            rows.append([_num(step.get("step")), f"{step.get('node')} ({step.get('type')})",
                         _text(_step_input(step)), _text(outcome), _text(_step_edges(step)),
                         _seconds(step.get("latency_s")), _num(step.get("tokens")), _num(step.get("attempts"))])
        views.append({"anchor": anchors[record_id], "id": record_id, "index": index, "table": Table(
            f"record {record_id}", ["step", "node", "input", "output", "edges", "latency", "tokens", "attempts"],
            rows, cls="trace")})
    return views


def _step_input(step: dict[str, Any]) -> str:
    """What the node was given: each model call's rendered messages (or prompt), else the keys it read."""
    calls = [call for call in step.get("calls") or [] if isinstance(call, dict)]
    if not calls:
        return _json(step.get("reads", {}))
    parts: list[str] = []
    for call in calls:
        if isinstance(call.get("messages"), list):
            parts.extend(f"{m.get('role')}: {m.get('content')}" for m in call["messages"] if isinstance(m, dict))
        if "prompt" in call:
            parts.append(f"prompt: {call['prompt']}")
        parts.append(f"-> {call.get('reply', call.get('error', ''))}")
    return "\n".join(parts)


def _step_edges(step: dict[str, Any]) -> str:
    lines = []
    for edge in step.get("edges") or []:
        if isinstance(edge, dict):
            value = edge.get("value")
            why = f"when {edge.get('when')} is {value}" if value is not None else edge.get("why")
            lines.append(f"-> {edge.get('to')} {'taken' if edge.get('taken') else 'not taken'} ({why})")
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------------

def _nice(value: float, integral: bool = False) -> float:
    """The smallest round step (1, 2, 2.5, 5 x 10^k) at least `value`: axes read at a glance."""
    if value <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    for multiple in ((1, 2, 5, 10) if integral and base >= 1 else (1, 2, 2.5, 5, 10)):
        if multiple * base >= value * (1 - 1e-9):
            return max(1.0, multiple * base) if integral else multiple * base
    return 10 * base


def _bin_edges(hists: list[StreamHistogram]) -> tuple[list[float], bool]:
    """Bins shared by the runs compared. `centred`: one bar per integer, labelled under its centre."""
    low, high = min(h.low for h in hists), max(h.high for h in hists)
    integral = all(h.integral for h in hists)
    if integral and high - low < 40:
        if high == low:  # a lone bar would fill the plot: show it between its neighbours
            low, high = (low - 1 if low >= 1 or low < 0 else low), high + 1
        # exactly the integers seen: llm_calls 3-5 is an axis of 3, 4, 5 (not 0-9)
        return [low - 0.5 + step for step in range(int(high - low) + 2)], True
    if high == low:
        return [low - 0.5, high + 0.5], False
    width = _nice((high - low) / BINS, integral)
    start = math.floor(low / width) * width
    count = int((high - start) // width) + 1
    return [start + width * step for step in range(count + 1)], False


def _plot(hist: StreamHistogram, edges: list[float], centred: bool, color: str) -> Plot:
    bins = [0] * (len(edges) - 1)
    width_of_bin = edges[1] - edges[0]
    for value, count in hist.counts.items():
        bins[min(max(int((value - edges[0]) // width_of_bin), 0), len(bins) - 1)] += count
    plot = Plot(width=520, height=180, left=46, right=14, color=color)
    top, bottom = 10, 30
    plot_w, plot_h = plot.width - plot.left - plot.right, plot.height - top - bottom
    step = _nice(max(bins) / 3, integral=True)
    axis_top = step * math.ceil(max(bins) / step)
    bar_w = plot_w / len(bins)
    gap = min(1.0, bar_w * 0.1)
    tick = 0.0
    while tick <= axis_top:
        plot.grid.append((round(top + plot_h * (1 - tick / axis_top), 1), _tick(tick)))
        tick += step
    for slot, count in enumerate(bins):
        if count:
            bar_h = plot_h * count / axis_top
            label = _tick(edges[slot] + 0.5) if centred else f"{_tick(edges[slot])}–{_tick(edges[slot + 1])}"
            plot.bars.append((round(plot.left + slot * bar_w + gap, 1), round(top + plot_h - bar_h, 1),
                              round(max(bar_w - 2 * gap, 0.5), 1), round(bar_h, 1), f"{label}: {count:,}"))
    for position in _label_positions(edges, centred):
        x = plot.left + (position + 0.5) * bar_w if centred else plot.left + position * bar_w
        plot.ticks.append((round(x, 1), _tick(edges[position] + 0.5 if centred else edges[position])))
    return plot


def _label_positions(edges: list[float], centred: bool) -> list[int]:
    """x labels: integers that are multiples of a round step under centred bars, else every k-th edge."""
    if centred:
        every = int(_nice((len(edges) - 1) / 10, integral=True))
        return [slot for slot in range(len(edges) - 1) if round(edges[slot] + 0.5) % every == 0]
    width = edges[1] - edges[0]
    every = int(_nice(len(edges) / 8, integral=True))
    return [slot for slot in range(len(edges)) if round(edges[slot] / width) % every == 0]


def _tick(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}"


# -- formatting values (plain text; the template escapes) --------------------------------------------

def _plain(value: Any) -> str:
    return "" if value is None else str(value)


def _text(value: Any) -> CellLike:
    """A data value for a table cell, long text cut with its full length said."""
    text = value if isinstance(value, str) else ("" if value is None else _json(value))
    if len(text) > TRUNCATE:
        return Cell(text[:TRUNCATE], more=len(text))
    return text


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) or float(value).is_integer() else f"{value:,.4g}"


def _ratio(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def _value(value: float | None) -> str:
    """A statistic of a histogram: whole numbers as such, others to four significant digits."""
    if value is None:
        return "–"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.4g}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _seconds(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:,.2f} s"


def _cost(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return "$0" if value == 0 else f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _total(rows: Any, key: str) -> Any:
    values = (_dict(row).get(key) for row in rows)
    return sum(value for value in values if isinstance(value, (int, float)) and not isinstance(value, bool))


def _output_names(runs: Sequence[RunSummary]) -> list[str]:
    return list(dict.fromkeys(output.name for run in runs for output in run.outputs))


def _find_output(run: RunSummary, name: str) -> OutputSummary | None:
    return next((output for output in run.outputs if output.name == name), None)

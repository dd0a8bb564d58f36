"""`synthloom report`: one self-contained HTML page about a finished run, or two runs side by side.

The page works offline and runs no code: plots are inline SVG drawn here, the stylesheet is inline, and a
Content-Security-Policy forbids scripts and remote loads. Every string that comes from a run (records,
node names, error messages) may come from someone else, so each one passes through `html.escape`.
"""
from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .metrics import PAIR_SAMPLE, TEXT_SAMPLE, StreamHistogram
from .report_data import OutputSummary, ReportError, RunSummary, read_run

REPORT = "report.html"
COLORS = ("#2f6690", "#c8553d")
TRUNCATE = 360
BINS = 20


def build_report(output_dir: str | Path, compare: str | Path | None = None) -> Path:
    """Write `<output_dir>/report.html` (with `compare`, both runs side by side); return its path."""
    runs = [read_run(output_dir)] + ([read_run(compare)] if compare is not None else [])
    path = Path(output_dir) / REPORT
    try:
        path.write_text(render(runs), encoding="utf-8")
    except OSError as error:
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def render(runs: Sequence[RunSummary]) -> str:
    first = runs[0].manifest
    title = f"synthloom report: {first.get('graph', '?')}"
    body = [_header(runs), _summary(runs), _outputs(runs), _losses(runs), _costs(runs), _examples(runs)]
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            f"style-src 'unsafe-inline'; img-src data:\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{STYLE}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


# -- sections ---------------------------------------------------------------------------------------

def _header(runs: Sequence[RunSummary]) -> str:
    first = runs[0].manifest
    lines = []
    for index, run in enumerate(runs):
        m = run.manifest
        lines.append(f"<p class=\"run\">{_swatch(index, runs)}<code>{_e(run.directory)}</code> · "
                     f"graph <b>{_e(m.get('graph', '?'))}</b> · config {_e(m.get('config_hash', '?'))} · "
                     f"started {_e(m.get('started') or '–')} · {_seconds(m.get('elapsed_s'))}</p>")
    return f"<header><h1>{_e(first.get('graph', 'run'))} <span>synthloom report</span></h1>{''.join(lines)}</header>"


def _summary(runs: Sequence[RunSummary]) -> str:
    def per_output(run: RunSummary) -> str:
        outputs = run.counts.get("outputs") or {}
        return ", ".join(f"{_e(name)} {_num(count)}" for name, count in outputs.items()) or "–"

    def status(run: RunSummary) -> str:
        state = str(run.manifest.get("status", "?"))
        message = run.manifest.get("message")
        badge = f"<span class=\"badge {_e(state)}\">{_e(state)}</span>"
        return badge + (f" <small>{_e(message)}</small>" if message else "")

    def models(run: RunSummary) -> Any:
        return run.manifest["models"].values()

    rows: list[tuple[str, Callable[[RunSummary], str]]] = [
        ("status", status),
        ("records seeded", lambda run: _num(run.counts.get("seeded"))),
        ("records written", lambda run: f"<b>{_num(run.counts.get('written'))}</b>"),
        ("lines per output", per_output),
        ("records failed", lambda run: _num(run.counts.get("failed"))),
        ("records dropped", lambda run: _num(run.counts.get("dropped"))),
        ("resumed from journal", lambda run: _num(run.counts.get("resumed_from_journal"))),
        ("LLM calls", lambda run: _num(_total(models(run), "calls"))),
        ("tokens (prompt + completion)", lambda run: _num(_total(models(run), "prompt_tokens")
                                                          + _total(models(run), "completion_tokens"))),
        ("cost", lambda run: _cost(_total(models(run), "cost_usd"))),
    ]
    return _section("Summary", _figure_table(rows, runs))


def _outputs(runs: Sequence[RunSummary]) -> str:
    parts = []
    for name in _output_names(runs):
        found = [_find_output(run, name) for run in runs]
        field = next((o.text_field for o in found if o and o.text_field), None)
        parts.append(f"<h3>{_e(name)}.jsonl <small>main text: {_e(field or 'none found')}</small></h3>")
        parts.append(_diversity_table(found, runs))
        figures = [(f"length of {field or 'text'} (words)", [o.lengths if o else None for o in found])]
        if any(o and o.rejected_lengths.n for o in found):
            figures.append(("length of rejected (words)", [o.rejected_lengths if o else None for o in found]))
        constant = []
        for key in dict.fromkeys(k for o in found if o for k in o.numbers):
            hists = [o.numbers.get(key) if o else None for o in found]
            values = {h.low for h in hists if h and h.n} | {h.high for h in hists if h and h.n}
            if len(values) == 1:  # a histogram of one bar says less than a line
                constant.append(f"metadata.{_e(key)} = {_value(values.pop())}")
            else:
                figures.append((f"metadata.{key}", hists))
        cells = [cell for caption, hists in figures for cell in _histograms(caption, hists, runs)]
        parts.append(f"<div class=\"figrow\">{''.join(cells)}</div>")
        if constant:
            parts.append(f"<p class=\"note\">The same in every record: {', '.join(constant)}.</p>")
        unreadable = [o.unreadable for o in found if o]
        if any(unreadable):
            parts.append(f"<p class=\"note\">{_num(sum(unreadable))} lines were not JSON objects and were skipped.</p>")
    if not parts:
        parts.append("<p class=\"note\">The run wrote no outputs.</p>")
    return _section("Outputs: lengths, scores and diversity", "\n".join(parts))


def _diversity_table(found: list[OutputSummary | None], runs: Sequence[RunSummary]) -> str:
    def of(get: Callable[[Any], Any]) -> Callable[[RunSummary], str]:
        def cell(run: RunSummary) -> str:
            output = found[next(index for index, other in enumerate(runs) if other is run)]
            diversity = output.diversity if output else None
            return get(diversity) if diversity else "–"
        return cell

    def embedding(d: Any) -> str:
        if not d.embedding_installed:
            return "<span class=\"muted\">not installed</span>"
        return _ratio(d.embedding)

    rows: list[tuple[str, Callable[[RunSummary], str]]] = [
        ("texts", of(lambda d: _num(d.texts))),
        (f"distinct-1 / 2 / 3 <small>corpus-level, sample of ≤{TEXT_SAMPLE}</small>",
         of(lambda d: " / ".join(_ratio(d.distinct[n]) for n in (1, 2, 3)))),
        (f"self-BLEU <small>lower is more diverse, sample of ≤{PAIR_SAMPLE}</small>",
         of(lambda d: _ratio(d.self_bleu))),
        (f"gzip compression ratio <small>lower is more diverse, sample of ≤{TEXT_SAMPLE}</small>",
         of(lambda d: _ratio(d.compression))),
        (f"embedding diversity <small>mean pairwise cosine distance, ≤{PAIR_SAMPLE}</small>", of(embedding)),
    ]
    return _figure_table(rows, runs)


def _histograms(caption: str, hists: list[StreamHistogram | None], runs: Sequence[RunSummary]) -> list[str]:
    """One figure per run, on shared bins so the two runs read alike."""
    present = [h for h in hists if h is not None and h.n]
    edges, centred = _bin_edges(present) if present else ([], False)
    figures = []
    for index, hist in enumerate(hists):
        title = f"<figcaption>{_swatch(index, runs)}{_e(caption)}"
        if hist is None or not hist.n:
            figures.append(f"<figure>{title}</figcaption><p class=\"note\">no values</p></figure>")
            continue
        stats = (f"n {_num(hist.n)} · mean {_value(hist.mean)} · median {_value(hist.quantile(0.5))} · "
                 f"range {_value(hist.low)} to {_value(hist.high)}")
        figures.append(f"<figure>{title}<small>{stats}</small></figcaption>"
                       f"{_svg(hist, edges, centred, COLORS[index % 2])}</figure>")
    return figures


def _losses(runs: Sequence[RunSummary]) -> str:
    parts = []
    for index, run in enumerate(runs):
        label = "" if len(runs) == 1 else f"<h3>{_swatch(index, runs)}{_e(run.directory)}</h3>"
        failures = run.reasons("failure_types")
        drops = run.reasons("drop_reasons")
        duplicates = run.duplicates()
        overview = [
            _table(["node", "error type", "records"], [(_e(n), _e(r), _num(c)) for n, r, c in failures],
                   "Failures by node and error", "No record failed."),
            _table(["node", "reason", "records"], [(_e(n), _e(r), _num(c)) for n, r, c in drops],
                   "Drops by node and reason", "No record was dropped."),
            _table(["dedup node", "removed", "seen", "rate"],
                   [(_e(n), _num(c), _num(s), _percent(c / s if s else None)) for n, c, s in duplicates],
                   "Duplicates removed, by dedup node", "No drop reason names a duplicate."),
        ]
        samples = [
            _table(["node", "error", "message", "seed"],
                   [(_e(row.get("node")), _e(row.get("error_type")), _text(row.get("message")),
                     _text(row.get("seed"))) for row in run.failed],
                   f"First failed records (of {_num(run.counts.get('failed'))}, from failed.jsonl)", None,
                   cls="long"),
            _table(["node", "reason", "detail"],
                   [(_e(row.get("node")), _e(row.get("reason")), _text(row.get("detail", ""))) for row in run.dropped],
                   f"First dropped records (of {_num(run.counts.get('dropped'))}, from dropped.jsonl)", None,
                   cls="long"),
        ]
        parts.append(label + f"<div class=\"grid3\">{''.join(overview)}</div>" + "".join(samples))
    return _section("Failed, dropped and duplicate records", "\n".join(parts))


def _costs(runs: Sequence[RunSummary]) -> str:
    head = ["calls", "cached", "retries", "prompt tok", "completion tok", "p50", "p95", "p99", "cost"]

    def usage(stats: dict[str, Any]) -> list[str]:
        latency = _dict(stats.get("latency_s"))
        return [_num(stats.get("calls")), _num(stats.get("cached")), _num(stats.get("retries")),
                _num(stats.get("prompt_tokens")), _num(stats.get("completion_tokens")),
                _seconds(latency.get("p50")), _seconds(latency.get("p95")), _seconds(latency.get("p99")),
                _cost(stats.get("cost_usd"))]

    parts = []
    for index, run in enumerate(runs):
        nodes, models, concurrency = (run.manifest[key] for key in ("nodes", "models", "concurrency"))
        node_rows = [[_e(name), _num(s.get("steps")), _num(s.get("failures")), _num(s.get("drops")),
                      *usage(_dict(s.get("llm")))] for name, s in nodes.items() if isinstance(s, dict)]
        model_rows = [[_e(name), *usage(s), _num(_dict(concurrency.get(name)).get("peak"))]
                      for name, s in models.items() if isinstance(s, dict)]
        label = "" if len(runs) == 1 else f"<h3>{_swatch(index, runs)}{_e(run.directory)}</h3>"
        parts.append(label + _table(["node", "steps", "failed", "dropped", *head], node_rows,
                                    "Per node <small>latency of LLM calls</small>", "No node ran.", cls="stats"))
        parts.append(_table(["model", *head, "peak concurrency"], model_rows, "Per model", "No model was called.",
                            cls="stats"))
    return _section("Tokens, calls, latency and cost", "\n".join(parts))


def _examples(runs: Sequence[RunSummary]) -> str:
    parts = []
    for index, run in enumerate(runs):
        for output in run.outputs:
            columns = list(dict.fromkeys(key for row in output.examples for key in row))
            rows = [[_num(number), *(_text(row.get(c, "")) for c in columns)]
                    for number, row in enumerate(output.examples, start=1)]
            caption = f"{_swatch(index, runs)}{_e(output.name)}.jsonl <small>first {len(rows)} records</small>"
            parts.append(_table(["#", *map(_e, columns)], rows, caption, "No records.", cls="long numbered"))
    return _section("Example records", "\n".join(parts) or "<p class=\"note\">No records.</p>")


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
        slots = int(high - low) + 1
        if slots < 10:  # a lone bar would fill the plot: show it among its neighbours
            low -= (10 - slots) // 2
            if min(h.low for h in hists) >= 0 and low < 0:
                low = 0
            high = low + 9
        return [low - 0.5 + step for step in range(int(high - low) + 2)], True
    if high == low:
        return [low - 0.5, high + 0.5], False
    width = _nice((high - low) / BINS, integral)
    start = math.floor(low / width) * width
    count = int((high - start) // width) + 1
    return [start + width * step for step in range(count + 1)], False


def _svg(hist: StreamHistogram, edges: list[float], centred: bool, color: str) -> str:
    bins = [0] * (len(edges) - 1)
    width_of_bin = edges[1] - edges[0]
    for value, count in hist.counts.items():
        bins[min(max(int((value - edges[0]) // width_of_bin), 0), len(bins) - 1)] += count
    width, height, left, right, top, bottom = 520, 180, 46, 14, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    step = _nice(max(bins) / 3, integral=True)
    axis_top = step * math.ceil(max(bins) / step)
    bar_w = plot_w / len(bins)
    gap = min(1.0, bar_w * 0.1)
    parts = [f"<svg viewBox=\"0 0 {width} {height}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">"]
    tick = 0.0
    while tick <= axis_top:
        y = top + plot_h * (1 - tick / axis_top)
        parts.append(f"<line x1=\"{left}\" x2=\"{width - right}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" class=\"grid\"/>"
                     f"<text x=\"{left - 6}\" y=\"{y + 4:.1f}\" class=\"ytick\">{_tick(tick)}</text>")
        tick += step
    for slot, count in enumerate(bins):
        if count:
            bar_h = plot_h * count / axis_top
            label = _tick(edges[slot] + 0.5) if centred else f"{_tick(edges[slot])}–{_tick(edges[slot + 1])}"
            parts.append(f"<rect x=\"{left + slot * bar_w + gap:.1f}\" y=\"{top + plot_h - bar_h:.1f}\" "
                         f"width=\"{max(bar_w - 2 * gap, 0.5):.1f}\" height=\"{bar_h:.1f}\" fill=\"{color}\">"
                         f"<title>{label}: {count:,}</title></rect>")
    for position in _label_positions(edges, centred):
        x = left + (position + 0.5) * bar_w if centred else left + position * bar_w
        value = edges[position] + 0.5 if centred else edges[position]
        parts.append(f"<text x=\"{x:.1f}\" y=\"{height - bottom + 16}\" class=\"xtick\">{_tick(value)}</text>")
    parts.append("</svg>")
    return "".join(parts)


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


# -- small pieces -----------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _text(value: Any) -> str:
    """A data value for a table cell: escaped, long text cut with its full length said."""
    text = value if isinstance(value, str) else ("" if value is None else _json(value))
    if len(text) > TRUNCATE:
        return f"{_e(text[:TRUNCATE])}<span class=\"muted\">… ({len(text):,} chars)</span>"
    return _e(text)


def _json(value: Any) -> str:
    import json
    return json.dumps(value, ensure_ascii=False, default=str)


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else _e(value)
    return f"{value:,}" if isinstance(value, int) or float(value).is_integer() else f"{value:,.4g}"


def _ratio(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else _e(value)
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
        return "–" if value is None else _e(value)
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:,.2f} s"


def _cost(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else _e(value)
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


def _swatch(index: int, runs: Sequence[RunSummary]) -> str:
    if len(runs) == 1:
        return ""
    return f"<span class=\"swatch\" style=\"background:{COLORS[index % 2]}\">{'AB'[index]}</span>"


def _section(title: str, content: str) -> str:
    return f"<section><h2>{_e(title)}</h2>\n{content}\n</section>"


def _figure_table(rows: list[tuple[str, Callable[[RunSummary], str]]], runs: Sequence[RunSummary]) -> str:
    """Rows of figures, one column per run (label HTML is ours; cell functions escape their data)."""
    head = "".join(f"<th class=\"num\">{_swatch(i, runs)}{_e(r.directory.name)}</th>" for i, r in enumerate(runs))
    body = "".join(f"<tr><th>{label}</th>" + "".join(f"<td class=\"num\">{cell(run)}</td>" for run in runs)
                   + "</tr>" for label, cell in rows)
    thead = f"<thead><tr><th></th>{head}</tr></thead>" if len(runs) > 1 else ""
    return f"<table class=\"figures\">{thead}<tbody>{body}</tbody></table>"


def _table(head: list[str], rows: Sequence[Sequence[str]], caption: str, empty: str | None,
           cls: str = "") -> str:
    """A data table; `rows` cells must already be escaped. With no rows: the `empty` note, or nothing."""
    if not rows:
        return f"<div><h4>{caption}</h4><p class=\"note\">{_e(empty)}</p></div>" if empty else ""
    header = "".join(f"<th>{cell}</th>" for cell in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (f"<div class=\"tablewrap\"><h4>{caption}</h4><table class=\"{cls}\"><thead><tr>{header}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


STYLE = """
:root { --ink:#1f2933; --muted:#6b7785; --line:#e3e7ec; --soft:#f6f8fa; --accent:#2f6690; }
* { box-sizing: border-box; }
body { margin:0; background:#fff; color:var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
header { border-bottom: 2px solid var(--ink); margin-bottom: 8px; padding-bottom: 10px; }
h1 { font-size: 28px; margin: 0 0 6px; } h1 span { color: var(--muted); font-weight: 400; font-size: 18px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; } h4 { font-size: 14px; margin: 14px 0 6px; color: var(--muted); }
small { color: var(--muted); font-weight: 400; margin-left: 6px; }
code { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.run { margin: 2px 0; color: var(--muted); } .run b { color: var(--ink); }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
thead th { background: var(--soft); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) > * { background: #fafbfc; }
td { font-variant-numeric: tabular-nums; }
table.figures { width: auto; min-width: 560px; } table.figures tbody th { font-weight: 500; }
table.figures td.num, table.figures th.num { text-align: right; min-width: 150px; }
table.long td { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 520px; }
table.numbered td:first-child { color: var(--muted); width: 2em; }
table.stats td:not(:first-child), table.stats th:not(:first-child) { text-align: right; }
.tablewrap { overflow-x: auto; }
.grid3 { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 4px 28px; margin-bottom: 12px; }
.figrow { display: grid; grid-template-columns: 1fr 1fr; gap: 18px 36px; margin: 14px 0 18px; }
figure { margin: 0; } figcaption { font-size: 14px; font-weight: 600; } figcaption small { display: block; margin: 0; }
svg { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; } svg text { font-size: 11px; fill: var(--muted); }
svg .ytick { text-anchor: end; } svg .xtick { text-anchor: middle; }
.note, .muted { color: var(--muted); } .note { font-style: italic; margin: 4px 0; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12.5px; background: var(--soft); }
.badge.completed { background: #e3f1e6; color: #1e6b34; } .badge.aborted { background: #fbe4e1; color: #9b2c1f; }
.badge.interrupted { background: #fdf1d8; color: #8a5a00; }
.swatch { display: inline-block; min-width: 18px; padding: 0 4px; margin-right: 6px; border-radius: 3px;
  color: #fff; font-size: 11px; font-weight: 700; text-align: center; }
"""

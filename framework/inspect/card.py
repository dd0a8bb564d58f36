"""The dataset card: `<run dir>/README.md` in the Hugging Face dataset card format, so a run directory can
be uploaded as a dataset as it is (`synthloom push`).

The YAML header lists each output's jsonl as a config (`datasets.load_dataset(repo, "sft")` works on the
Hub), the task and size categories, tags, and a `license` left for the user to set. The body says how the
data was made: the graph as a Mermaid diagram, the models and their parameters (API keys never: only the
name of the variable that held one), counts and drop reasons, corpus measures, and the graph file itself.
Every figure comes from the run's manifest and output files, so `synthloom card DIR` rebuilds the same card.
"""
from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..sandbox.redact import redact, scrub, secret_values
from ..store.journal import CARD, MANIFEST, TEMPORARY
from .report_data import OutputSummary, ReportError, summarise_output

if TYPE_CHECKING:
    from ..graph.runnable import Graph

FORMAT_TAGS = {"sft": "sft", "dpo": "dpo", "raw": "raw"}
SIZE_CATEGORIES = [(10 ** 3, "n<1K"), (10 ** 4, "1K<n<10K"), (10 ** 5, "10K<n<100K"), (10 ** 6, "100K<n<1M"),
                   (10 ** 7, "1M<n<10M"), (10 ** 8, "10M<n<100M"), (10 ** 9, "100M<n<1B"), (10 ** 10, "1B<n<10B"),
                   (10 ** 11, "10B<n<100B"), (10 ** 12, "100B<n<1T")]  # the Hub's size_categories
LICENSE_NOTE = ("# licence: set it before you share the data (an SPDX id such as cc-by-4.0, or `other` with "
                "license_name); outputs inherit the terms of the models and seed data used")


CARD_PARSED_LINES = 200_000
"""Lines of one output the card parses at most (it samples every k-th past that; it counts them all)."""


class CardError(ReportError):
    """The directory holds no run to describe (no readable manifest)."""


def write_card(directory: Path, manifest: dict[str, Any], graph: Graph) -> Path | None:
    """Write the card of a run that has just ended (the API's and CLI's `RunOptions.on_finished`, or the
    `run --ray` driver, calls this once, at the end). A run the user interrupted gets none: it is leaving
    quickly, and `--resume` writes the card when it finishes."""
    if manifest.get("status") == "interrupted":
        return None
    try:
        return _write(directory, card_text(directory, manifest, graph, manifest.get("graph_file")))
    except Exception as error:  # the run's message says so (see RunOptions.on_finished)
        raise CardError(f"README.md (dataset card) not written: {error}") from error


def build_card(output_dir: str | Path, allow_read: Sequence[str | Path] = (), graph: str | Path | None = None
               ) -> Path:
    """Write `<output_dir>/README.md` from the run's manifest and files; return its path. Raises `CardError`
    when the directory holds no readable manifest. `allow_read`: as for `synthloom.load`, to load the graph.
    `graph`: the run's graph file, drawn and quoted; without it, the file the manifest names is drawn (as
    `validate` loads it) but quoted only when it lies inside the run directory (a downloaded run's manifest
    may name any file of yours, with its comments and hosts)."""
    directory = Path(output_dir)
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CardError(f"{directory} has no readable {MANIFEST} ({error}); is it a run's output directory?"
                        ) from None
    if not isinstance(manifest, dict):
        raise CardError(f"{directory / MANIFEST} does not hold a manifest object")
    loaded = run_graph({"graph_file": str(graph)} if graph is not None else manifest, allow_read)
    quoted = str(graph) if graph is not None else graph_file_inside(directory, manifest)
    return _write(directory, card_text(directory, manifest, loaded, quoted))


def graph_file_inside(directory: Path, manifest: dict[str, Any]) -> str | None:
    """The graph file the manifest names, if it lies inside the run directory (links followed)."""
    named = manifest.get("graph_file")
    if not isinstance(named, str) or not named:
        return None
    folder = directory.resolve()
    resolved = (directory / named).resolve()
    return named if resolved == folder or folder in resolved.parents else None


def _write(directory: Path, text: str) -> Path:
    path = directory / CARD
    temporary = directory / (CARD + TEMPORARY)
    temporary.unlink(missing_ok=True)  # a link of that name would have the card written where it points
    with temporary.open("x", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return path


def run_graph(manifest: dict[str, Any], allow_read: Sequence[str | Path] = ()) -> Graph | None:
    """The run's graph, for its picture, when its file is still where the run read it. A run directory may
    be a stranger's download, so its graph is loaded as `validate` loads one: the Python in its folder is
    read, never run, and the key and code rules of a run apply."""
    from ..graph.load import load  # on first use: loading pulls in the node registry and the seed reader
    graph_file = manifest.get("graph_file")
    if not isinstance(graph_file, str) or not Path(graph_file).is_file():
        return None
    try:
        return load(graph_file, run_folder_code=False, allow_read=list(allow_read))
    except Exception:  # a graph that no longer loads (a moved seed, a missing plugin) just has no picture
        return None


# -- the card's text --------------------------------------------------------------------------------

def card_text(directory: Path, manifest: dict[str, Any], graph: Graph | None, graph_file: Any) -> str:
    """The card; `graph_file` is the graph file it may quote (None: quote none)."""
    counts = _dict(manifest.get("counts"))
    written = _dict(counts.get("outputs"))
    formats = _formats(manifest, graph)
    summaries = [summarise_output(directory / f"{name}.jsonl", name, embeddings=False,
                                  expected=_count(written.get(name)), parse_at_most=CARD_PARSED_LINES)
                 for name in written if _plain(name)]
    header = card_header(summaries, formats, str(manifest.get("graph") or directory.name),
                         _languages(manifest, graph))
    body = "\n".join([
        f"# {as_text(manifest.get('graph') or directory.name)}", "",
        _description(manifest, graph),
        *_loading(summaries),
        *_outputs_section(summaries, formats),
        *_counts_section(manifest, counts),
        *_review_section(directory, manifest, written),
        *_graph_section(graph),
        *_models_section(manifest),
        *_metrics_section(summaries),
        *_graph_file_section(manifest, graph_file),
    ])
    return f"---\n{header}---\n\n{body}\n"


def card_header(summaries: list[OutputSummary], formats: dict[str, str], name: str,
                languages: list[str] | None = None) -> str:
    """The YAML front matter: configs (one per non-empty output), language, categories, tags, a licence to
    set."""
    kept = [summary for summary in summaries if summary.records > 0]
    configs = [{"config_name": summary.name, "data_files": [{"split": "train", "path": f"{summary.name}.jsonl"}],
                **({"default": True} if index == 0 else {})} for index, summary in enumerate(kept)]
    largest = max((summary.records for summary in kept), default=0)
    tags = ["synthetic", "synthloom", *sorted({FORMAT_TAGS[formats[s.name]] for s in kept
                                               if formats.get(s.name) in FORMAT_TAGS})]
    data: dict[str, Any] = {
        "pretty_name": name,
        "language": languages or ["en"],
        "configs": configs,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(largest)],
        "tags": tags,
    }
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    return f"{LICENSE_NOTE}\nlicense: unknown\n{text}"


def size_category(records: int) -> str:
    for limit, label in SIZE_CATEGORIES:
        if records < limit:
            return label
    return "n>1T"


def _formats(manifest: dict[str, Any], graph: Graph | None) -> dict[str, str]:
    if graph is not None:
        return {output.name: output.format for output in graph.config.outputs}
    found = manifest.get("output_formats")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _languages(manifest: dict[str, Any], graph: Graph | None) -> list[str]:
    """The graph's `language:` (the manifest keeps it for `synthloom card DIR`); English when unsaid."""
    if graph is not None:
        return list(graph.config.language)
    found = manifest.get("language")
    return [str(code) for code in found] if isinstance(found, list) and found else ["en"]


def _description(manifest: dict[str, Any], graph: Graph | None) -> str:
    said = graph.config.description if graph is not None and graph.config.description else None
    lines = [as_text(said) + "\n" if said else "",
             f"Synthetic data made by synthloom from the graph {as_text(manifest.get('graph'))} "
             f"(config hash {as_text(manifest.get('config_hash'))}): run status **{as_text(manifest.get('status'))}**, "
             f"{_seconds(manifest.get('elapsed_s'))}, ended {as_text(manifest.get('ended') or 'n/a')}."]
    if manifest.get("message"):
        lines.append(f"\nRun message: {as_text(manifest['message'])}")
    return "\n".join(line for line in lines if line)


_INLINE = re.compile(r"([\\`\[\]!|])")
_LINE_START = re.compile(r"^(\s*)([#+\-=>]|\d+[.)])", re.MULTILINE)


def as_text(value: Any) -> str:
    """A string a graph or a manifest gives, shown as plain text in the card's markdown: HTML escaped, and
    the markdown characters backslashed that could add a link, image, code span or fence, table cell,
    heading, quote or list, so it reads as the same words and nothing more."""
    text = _INLINE.sub(r"\\\1", html.escape(str(value), quote=False))
    return _LINE_START.sub(lambda match: match.group(1) + "\\" + match.group(2), text)


def _loading(summaries: list[OutputSummary]) -> list[str]:
    kept = [summary.name for summary in summaries if summary.records > 0]
    if not kept:
        return []
    return ["", "## Loading", "", "```python", "import datasets",
            f'data = datasets.load_dataset("<user>/<repo>", "{kept[0]}", split="train")   # from the Hub',
            f'data = datasets.load_dataset("json", data_files="{kept[0]}.jsonl", split="train")   # this folder',
            "```"]


def _outputs_section(summaries: list[OutputSummary], formats: dict[str, str]) -> list[str]:
    rows = ["", "## Outputs", "", "| output | format | records | file |", "|---|---|---|---|"]
    for summary in summaries:
        rows.append(f"| {summary.name} | {formats.get(summary.name, '?')} | {summary.records} | "
                    f"`{summary.name}.jsonl` |")
    rows.append("")
    rows.append("Records follow TRL's conversational formats: `sft` has `messages`; `dpo` has `prompt`, "
                "`chosen`, `rejected`; each record's `metadata` holds its stable `id`, the graph, the config "
                "hash and its calls and tokens.")
    return rows


def _counts_section(manifest: dict[str, Any], counts: dict[str, Any]) -> list[str]:
    rows = ["", "## Counts", "", "| seeded | written | dropped | failed |", "|---|---|---|---|",
            f"| {counts.get('seeded', 0)} | {counts.get('written', 0)} | {counts.get('dropped', 0)} | "
            f"{counts.get('failed', 0)} |"]
    for key, title in (("drop_reasons", "Drop reasons"), ("failure_types", "Failures")):
        reasons = counts.get(key)
        if isinstance(reasons, dict) and reasons:
            rows += ["", f"{title} (node: reason):", "", "| reason | records |", "|---|---|"]
            for reason, count in sorted(reasons.items(), key=lambda item: -int(item[1] or 0)):
                rows.append(f"| {_cell(reason)} | {count} |")
    return rows


def _review_section(directory: Path, manifest: dict[str, Any], written: dict[str, Any]) -> list[str]:
    """Counts of human review (`synthloom studio`): from the manifest a reviewed push stages, else from the
    run's reviews.jsonl; nothing when no record was reviewed."""
    from ..store.reviews import review_counts
    reviewed_only = isinstance(manifest.get("reviews"), dict)
    tallies = _dict(manifest.get("reviews")) if reviewed_only else review_counts(directory)
    if not tallies:
        return []
    rows = ["", "## Human review", "",
            ("These files hold only the records accepted in review, with reviewers' edits applied."
             if reviewed_only else "Reviews are kept in `reviews.jsonl`; `synthloom push --reviewed` uploads only "
             "the accepted records, with their edits."), "",
            "| output | written | accepted | edited | rejected | not reviewed |", "|---|---|---|---|---|---|"]
    for name, tally in sorted(tallies.items()):
        tally = _dict(tally)
        total = _count(_dict(manifest.get("written_before_review")).get(name) if reviewed_only else written.get(name))
        accepted, rejected = _count(tally.get("accepted")), _count(tally.get("rejected"))
        rows.append(f"| {_cell(name)} | {total} | {accepted} | {_count(tally.get('edited'))} | {rejected} | "
                    f"{max(0, total - accepted - rejected)} |")
    return rows


def _graph_section(graph: Graph | None) -> list[str]:
    if graph is None:
        return ["", "## Graph", "", "(the graph file could not be loaded again, so no diagram; its text is below "
                "when it could be read)"]
    return ["", "## Graph", "", "```mermaid", graph.mermaid(), "```"]


def _models_section(manifest: dict[str, Any]) -> list[str]:
    settings = manifest.get("model_settings")
    usage = _dict(manifest.get("models"))
    if not isinstance(settings, dict) or not settings:
        return []
    rows = ["", "## Models", "", "| name | backend | model | base URL | params | API key from | calls | tokens |",
            "|---|---|---|---|---|---|---|---|"]
    for name, setting in settings.items():
        if not isinstance(setting, dict):
            continue
        used = _dict(usage.get(name))
        tokens = int(used.get("prompt_tokens") or 0) + int(used.get("completion_tokens") or 0)
        key_env = setting.get("api_key_env")
        rows.append(f"| {_cell(name)} | {_cell(setting.get('backend', ''))} | {_cell(setting.get('model') or '')} | "
                    f"{_cell(redact(setting.get('base_url') or ''))} | "
                    f"{_cell(json.dumps(redact(setting.get('params') or {})))} | "
                    f"{_cell('$' + str(key_env)) if key_env else ''} | {used.get('calls', 0)} | {tokens} |")
    return rows


def _metrics_section(summaries: list[OutputSummary]) -> list[str]:
    measured = [s for s in summaries if s.records > 0 and s.diversity is not None and s.text_field]
    if not measured:
        return []
    rows = ["", "## Corpus measures", "",
            "On a seeded sample of each output's main text (assistant turns, or the chosen reply): distinct-n "
            "is unique n-grams over all n-grams; self-BLEU compares each text with the others (lower is more "
            "varied); compression is UTF-8 bytes over gzip bytes (higher is more repetitive)." +
            _sampled_note(summaries), "",
            "| output | text | words (median) | distinct-1 | distinct-2 | distinct-3 | self-BLEU | compression |",
            "|---|---|---|---|---|---|---|---|"]
    for summary in measured:
        d = summary.diversity
        assert d is not None
        median = summary.lengths.quantile(0.5)
        rows.append(f"| {summary.name} | {summary.text_field} | {_number(median)} | {_number(d.distinct[1])} | "
                    f"{_number(d.distinct[2])} | {_number(d.distinct[3])} | {_number(d.self_bleu)} | "
                    f"{_number(d.compression)} |")
    return rows


def _sampled_note(summaries: list[OutputSummary]) -> str:
    sampled = [f"{s.name}: 1 in {s.every:,}" for s in summaries if s.every > 1]
    return (f" Word counts and these measures read one record in k of the larger outputs ({', '.join(sampled)}), "
            f"spread over the whole file, so the card stays quick at millions of records." if sampled else "")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _graph_file_section(manifest: dict[str, Any], graph_file: Any) -> list[str]:
    """The graph file as run, when it is still there and reads as a graph (a crafted manifest may name any
    file: only a graph file is quoted), with its secrets cut out and a fence no line of it can close."""
    if graph_file is None and isinstance(manifest.get("graph_file"), str):
        return ["", "## Graph file", "", f"The manifest names {as_text(manifest['graph_file'])}, outside the run "
                "directory; it is quoted only when you name it: `synthloom card DIR --graph FILE`."]
    text = _graph_file_text(graph_file)
    if text is None:
        return ["", "## Graph file", "", f"Not found at {as_text(graph_file)}; the manifest names the graph "
                f"{as_text(manifest.get('graph'))}."]
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return ["", "## Graph file", "", f"{as_text(Path(str(graph_file)).name)}, as run (settings changed with "
            "`--set` or `--endpoint` show in Models above):", "", f"{fence}yaml", text.rstrip("\n"), fence]


def _graph_file_text(graph_file: Any) -> str | None:
    from ..config.loader import load_config
    if not isinstance(graph_file, str) or not graph_file:
        return None
    try:
        loaded = load_config(graph_file)
        text = Path(graph_file).read_text(encoding="utf-8")
    except Exception:  # gone, unreadable, or not a graph file: the card says so instead
        return None
    return scrub(text, list(secret_values(loaded.raw)))


def _dict(value: Any) -> dict[str, Any]:
    """A manifest section, or empty when a hand-edited manifest holds something else there."""
    return value if isinstance(value, dict) else {}


def _plain(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and Path(name).name == name and not name.startswith(".")


def _cell(value: Any) -> str:
    """A table cell: one line, as plain text (see `as_text`)."""
    return as_text(re.sub(r"\s+", " ", str(value)))


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _seconds(value: Any) -> str:
    return f"{float(value):.1f} s" if isinstance(value, (int, float)) else "time n/a"

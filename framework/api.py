"""The Python API: everything the CLI does, for a notebook or a script.

    graph = synthloom.load("graphs/quickstart.yaml")
    result = synthloom.run(graph, "runs/qs", limit=20)
    result.dataset("sft")          # a datasets.Dataset
"""
from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .graph.load import load
from .graph.runnable import Graph
from .store.journal import DROPPED, FAILED, JOURNAL, MANIFEST, TRACES
from .store.reviews import write_reviewed

if TYPE_CHECKING:  # the engine is imported by the functions that run a graph: loading one does not need it
    from .engine.runner import RunOptions


@dataclass
class RunResult:
    output_dir: Path
    manifest: dict[str, Any]

    def path(self, output: str) -> Path:
        return self.output_dir / f"{output}.jsonl"

    def records(self, output: str) -> Iterator[dict[str, Any]]:
        return read_records(self.output_dir, output)

    def dataset(self, output: str) -> Any:
        return load_dataset(self.output_dir, output)


def read_records(output_dir: str | Path, output: str) -> Iterator[dict[str, Any]]:
    """The records of one output (or failed, dropped), streamed. Raises `ConfigError` naming the outputs
    there are when the run has no output of that name."""
    path = _output_path(output_dir, output)
    if not path.exists():
        return iter(())
    return _lines(path)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def load_dataset(output_dir: str | Path, output: str, *, reviewed: bool = False) -> Any:
    """An output file as a `datasets.Dataset` (empty if the run wrote no record to it). Raises `ConfigError`
    naming the outputs there are when the run has no output of that name. `reviewed=True`: only the records
    accepted in `synthloom studio` (reviews.jsonl), with their edits applied."""
    path = _output_path(output_dir, output)
    import datasets
    datasets.disable_progress_bars()
    if reviewed:
        with tempfile.TemporaryDirectory() as folder:  # streamed to a file, so memory stays flat
            kept = Path(folder) / path.name
            if write_reviewed(output_dir, output, kept) == 0:
                return datasets.Dataset.from_list([])
            return datasets.Dataset.from_json(str(kept))
    if not path.exists() or path.stat().st_size == 0:
        return datasets.Dataset.from_list([])
    return datasets.Dataset.from_json(str(path))


BOOKKEEPING = {JOURNAL, TRACES}
RUN_FILES = {FAILED, DROPPED, TRACES}  # every run may have these (empty when nothing failed, dropped, traced)


def _output_path(output_dir: str | Path, output: str) -> Path:
    """`<dir>/<output>.jsonl` for an output the run declares (its file may be absent: no record written),
    for failed, dropped or traces, or for a file that is there; any other name is a mistake worth naming."""
    directory = Path(output_dir)
    path = directory / f"{output}.jsonl"
    if Path(output).name != output:
        raise ConfigError(f"'{output}' is not an output name; give a plain name such as 'sft'")
    try:
        declared = list((read_manifest(directory).get("counts") or {}).get("outputs") or {})
    except (OSError, ValueError):
        declared = []
    if path.is_file() or output in declared or path.name in RUN_FILES:
        return path
    present = sorted(item.stem for item in directory.glob("*.jsonl") if item.name not in BOOKKEEPING)
    known = [*declared, *(name for name in present if name not in declared)]
    raise ConfigError(f"no output '{output}' in {directory}; "
                      + (f"it has {', '.join(known)}" if known else "it holds no run outputs"))



def read_manifest(output_dir: str | Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((Path(output_dir) / MANIFEST).read_text(encoding="utf-8"))
    return manifest


async def arun(graph: Graph | str | Path, output_dir: str | Path, *, options: RunOptions | None = None,
               allow_code: list[str] | None = None, trust_graph: bool = False,
               allow_key_hosts: list[str] | None = None, allow_read: list[str | Path] | None = None,
               **option_values: Any) -> RunResult:
    """Run a graph inside a running event loop (a notebook cell can `await` it). `allow_code`,
    `trust_graph`, `allow_key_hosts`, `allow_read`: see `load`. Messages that name the CLI's flags (`--resume`)
    name this function's options (`resume=True`) instead."""
    from .engine.runner import Runner, RunOptions
    from .inspect.card import write_card
    if not isinstance(graph, Graph):
        graph = load(graph, allow_code=allow_code, trust_graph=trust_graph, allow_key_hosts=allow_key_hosts,
                     allow_read=allow_read)
    options = options or RunOptions(**option_values)
    if options.on_finished is None:  # every run from the API leaves its dataset card, as the CLI's do
        options = replace(options, on_finished=write_card)
    try:
        runner = Runner(graph, Path(output_dir), options)
        manifest = await runner.run()
    except ConfigError as error:
        raise ConfigError(python_words(error.message), where=error.where, key=error.key) from None
    if isinstance(manifest.get("message"), str):
        manifest = {**manifest, "message": python_words(manifest["message"])}
    return RunResult(Path(output_dir), manifest)


def run(graph: Graph | str | Path, output_dir: str | Path, *, ray: bool = False, shards: int | None = None,
        address: str | None = None, **option_values: Any) -> RunResult:
    """Run a graph to completion and return where its records are. Options: see `RunOptions`.
    `ray=True` runs `shards` shards as Ray tasks into the one directory (see `synthloom.distributed.driver`)."""
    if ray:
        from .distributed.driver import run_on_ray
        return RunResult(Path(output_dir), run_on_ray(graph, output_dir, shards, address=address, **option_values))
    # allow_code, trust_graph, allow_key_hosts and allow_read go on to `arun`, as run_on_ray takes them too
    return asyncio.run(arun(graph, output_dir, **option_values))


FLAG_OPTIONS = {"--resume": "resume=True", "--overwrite": "overwrite=True", "--no-retry-failed": "retry_failed=False",
                "--no-cache": "use_cache=False", "--trace": "trace=True", "--max-in-flight": "max_in_flight="}
_FLAG = re.compile("|".join(re.escape(flag) + r"(?![\w-])" for flag in sorted(FLAG_OPTIONS, key=len, reverse=True)))


def python_words(message: str) -> str:
    """A message written for the command line, in the words of a Python caller."""
    return _FLAG.sub(lambda match: FLAG_OPTIONS[match.group(0)], message)

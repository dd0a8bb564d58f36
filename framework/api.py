"""The Python API: everything the CLI does, for a notebook or a script.

    graph = synthloom.load("graphs/quickstart.yaml")
    result = synthloom.run(graph, "runs/qs", limit=20)
    result.dataset("sft")          # a datasets.Dataset
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .graph import Graph, build_graph
from .journal import MANIFEST
from .loader import load_config
from .scheduler import Runner, RunOptions
from .seeds import seed_columns


def find_graph_file(name_or_path: str | Path) -> Path:
    """A path, or the name of a ready-made workflow in graphs/ (`self_instruct`)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    if path.suffix in ("", ".yaml", ".yml") and len(path.parts) == 1:
        packaged = resources.files("synthloom_graphs") / f"{path.stem}.yaml"
        if packaged.is_file():
            return Path(str(packaged))
    raise ConfigError(f"no graph file '{name_or_path}' (and no ready-made workflow of that name; "
                      f"see `synthloom list`)")


def load(path: str | Path, overrides: list[str] | None = None, endpoint: str | None = None) -> Graph:
    """Read and validate a graph file (or ready-made workflow name). Raises `ConfigError`."""
    loaded = load_config(find_graph_file(path), overrides, endpoint)
    columns = seed_columns(loaded.config.seed, loaded.base_dir)
    return build_graph(loaded, columns)


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
    path = Path(output_dir) / f"{output}.jsonl"
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def load_dataset(output_dir: str | Path, output: str) -> Any:
    """An output file as a `datasets.Dataset` (empty if the run wrote none)."""
    import datasets
    datasets.disable_progress_bars()
    path = Path(output_dir) / f"{output}.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        return datasets.Dataset.from_list([])
    return datasets.Dataset.from_json(str(path))


def read_manifest(output_dir: str | Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((Path(output_dir) / MANIFEST).read_text(encoding="utf-8"))
    return manifest


async def arun(graph: Graph | str | Path, output_dir: str | Path, *, options: RunOptions | None = None,
               **option_values: Any) -> RunResult:
    """Run a graph inside a running event loop (a notebook cell can `await` it)."""
    if not isinstance(graph, Graph):
        graph = load(graph)
    options = options or RunOptions(**option_values)
    runner = Runner(graph, Path(output_dir), options)
    manifest = await runner.run()
    return RunResult(Path(output_dir), manifest)


def run(graph: Graph | str | Path, output_dir: str | Path, *, ray: bool = False, shards: int | None = None,
        address: str | None = None, **option_values: Any) -> RunResult:
    """Run a graph to completion and return where its records are. Options: see `RunOptions`.
    `ray=True` runs `shards` shards as Ray tasks into the one directory (see `synthloom.distributed`)."""
    if ray:
        from .distributed import run_on_ray
        return RunResult(Path(output_dir), run_on_ray(graph, output_dir, shards, address=address, **option_values))
    return asyncio.run(arun(graph, output_dir, **option_values))

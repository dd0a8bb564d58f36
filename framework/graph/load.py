"""A graph file (or the name of a ready-made workflow) -> a validated, runnable `Graph`, under the user's
consent for code, key hosts and folders. Below the engine: the engine, the inspectors (card, report, preview)
and the Ray driver all load graphs through this one function (`synthloom.load` is it)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from ..config.loader import load_config, pinpoint
from ..errors import ConfigError
from ..sandbox.code_policy import CodePolicy
from ..sandbox.files import resolved_folders
from .runnable import Graph, build_graph
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


def load(path: str | Path, overrides: list[str] | None = None, endpoint: str | None = None, *,
         allow_code: list[str] | None = None, trust_graph: bool = False,
         allow_key_hosts: list[str] | None = None, allow_read: list[str | Path] | None = None,
         run_folder_code: bool = True) -> Graph:
    """Read and validate a graph file (or ready-made workflow name). Raises `ConfigError`.

    The Python the graph names may come only from node types, the graph's folder, and the modules in
    `allow_code`; a model's API key goes only to its provider's host or to a host the user named
    (`endpoint`, a `base_url` in `overrides`, `allow_key_hosts`); `trust_graph=True` also honours the
    graph's own `run.allow_code` and lets keys go where the graph says (see README, "Graphs from
    strangers"). `allow_read`: folders the graph may read files from and keep dedup indexes in, besides its
    own folder (and SYNTHLOOM_ALLOW_READ's). `run_folder_code=False` (validate, show) lists graph-folder code
    without running it."""
    read_folders = resolved_folders(allow_read or ())
    loaded = load_config(find_graph_file(path), overrides, endpoint, read_folders)
    try:
        columns = seed_columns(loaded.config.seed, loaded.base_dir)
    except ConfigError as error:
        raise pinpoint(error, loaded.source_map) from None
    hosts = [*(allow_key_hosts or ()), *user_named_urls(overrides or [], endpoint)]
    code = CodePolicy.for_graph(loaded.base_dir, allow_code or (), loaded.config.run.allow_code, trust_graph,
                                run_folder_code=run_folder_code, allow_key_hosts=hosts, allow_read=read_folders)
    return build_graph(loaded, columns, code)


def user_named_urls(overrides: list[str], endpoint: str | None) -> list[str]:
    """The servers the user typed: `--endpoint`'s URLs and `--set models.<m>.base_url=` values."""
    urls = endpoint.split(",") if endpoint else []
    for assignment in overrides:
        key, _, value = assignment.partition("=")
        parts = key.strip().split(".")
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "base_url":
            try:
                given = yaml.safe_load(value)
            except yaml.YAMLError:
                continue  # load_config has said what is wrong with it
            urls.extend(str(url) for url in (given if isinstance(given, list) else [given]) if url)
    return urls

"""Iterate on one node of a run's graph: edit its YAML in the browser, preview chosen seed rows with the
graph as it was and as edited, side by side, and save the edited graph as a new file beside the old one.

The edit reaches the graph as an override of that one node (`nodes.<name>=<the node's YAML>`), so it goes
through the loader's own checks (schema, sandboxed templates, code rules) exactly as `--set` would, and the
graph file itself is never touched. Both previews run in a worker thread with `preview`'s own event loop
and share the response cache, so the old side costs nothing when the run already asked the same.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..graph.seeds import BadSeed, read_seeds, row_id

MAX_ROWS = 5             # seed rows previewed at once
SEED_SCAN = 1_000_000    # seed rows read at most to find the chosen ones


def graph_file(manifest: dict[str, Any]) -> Path:
    named = manifest.get("graph_file")
    if not isinstance(named, str) or not Path(named).is_file():
        raise ConfigError("this run's graph file is gone (the manifest names "
                          f"{named!r}); iterate needs the graph the run was made from")
    return Path(named)


def raw_graph(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict) or not isinstance(loaded.get("nodes"), dict):
        raise ConfigError(f"{path} holds no nodes to edit")
    return loaded


def node_yaml(raw: dict[str, Any], node: str) -> str:
    if node not in raw["nodes"]:
        raise ConfigError(f"no node '{node}' in the graph (nodes: {', '.join(raw['nodes'])})")
    return str(yaml.safe_dump(raw["nodes"][node], sort_keys=False, allow_unicode=True, width=100))


def parse_node(text: str) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"the node's YAML does not parse{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(spec, dict):
        raise ConfigError("the node's YAML must be a mapping of its settings (type, messages, params ...)")
    return spec


def run_overrides(manifest: dict[str, Any]) -> list[str]:
    """Point each model where the run pointed it (its backend, base_url and model name, from the manifest), so a
    run made with `--endpoint` previews against the same server."""
    settings = manifest.get("model_settings")
    overrides: list[str] = []
    for name, model in (settings.items() if isinstance(settings, dict) else ()):
        if not isinstance(model, dict) or not str(name).replace("_", "").replace("-", "").isalnum():
            continue
        for key in ("backend", "base_url", "model"):
            if isinstance(model.get(key), str) and model[key]:
                overrides.append(f"models.{name}.{key}={json.dumps(model[key])}")
    return overrides


def chosen_rows(graph: Any, ids: list[str]) -> list[dict[str, Any]]:
    """The seed rows whose ids were chosen, in the order chosen, read streaming until all are found."""
    wanted, found = set(ids), dict[str, dict[str, Any]]()
    for number, item in enumerate(read_seeds(graph.config.seed, graph.base_dir)):
        if number >= SEED_SCAN or len(found) == len(wanted):
            break
        if isinstance(item, BadSeed):
            continue
        key = row_id(item, graph.config.seed.id_field)
        if key in wanted and key not in found:
            found[key] = item
    missing = [key for key in ids if key not in found]
    if missing:
        raise ConfigError(f"no seed row with id {', '.join(missing)} in the graph's seed data")
    return [found[key] for key in ids]


def side_by_side(manifest: dict[str, Any], node: str, text: str, ids: list[str]) -> list[dict[str, Any]]:
    """Preview the chosen rows with the graph as it was and with `node` as edited: per row, both results."""
    from ..graph.load import load
    from ..inspect.preview import preview
    if not ids:
        raise ConfigError("choose at least one record to preview")
    path, spec = graph_file(manifest), parse_node(text)
    base = run_overrides(manifest)
    old_graph = load(path, overrides=base)
    new_graph = load(path, overrides=[*base, f"nodes.{node}={json.dumps(spec)}"])
    rows = chosen_rows(old_graph, ids[:MAX_ROWS])
    old, new = preview(old_graph, rows=rows), preview(new_graph, rows=rows)
    return [{"id": before["id"], "old": _shown(before, node), "new": _shown(after, node)}
            for before, after in zip(old, new, strict=True)]


def _shown(result: dict[str, Any], node: str) -> dict[str, Any]:
    """What a side shows: the outcome, the edited node's replies and outputs, and the lines written."""
    steps = [step for step in result.get("steps", []) if step.get("node") == node]
    return {"outcome": result.get("outcome"), "reason": result.get("reason") or result.get("error") or "",
            "replies": [call.get("reply", call.get("error", "")) for step in steps for call in step.get("calls", [])],
            "outputs": [step.get("output") for step in steps if step.get("output") is not None],
            "lines": result.get("outputs", {})}


def save_as(manifest: dict[str, Any], node: str, text: str) -> Path:
    """Write the graph with `node` as edited to a new file beside the old (`<name>.studio-<k>.yaml`, the
    first free k), after checking that it loads; never over an existing file."""
    from ..graph.load import load
    path, spec = graph_file(manifest), parse_node(text)
    load(path, overrides=[f"nodes.{node}={json.dumps(spec)}"], run_folder_code=False)
    raw = raw_graph(path)
    raw["nodes"][node] = spec
    body = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100)
    for number in range(1, 1000):
        target = path.with_name(f"{path.stem}.studio-{number}{path.suffix}")
        try:
            with target.open("x", encoding="utf-8") as handle:
                handle.write(f"# made by synthloom studio from {path.name}, node '{node}' edited\n{body}")
            return target
        except FileExistsError:
            continue
    raise ConfigError(f"{path.parent} holds too many studio copies of {path.name}; remove some")

"""Read a graph file into a `GraphConfig`, keeping YAML line numbers so every error can point at its line."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config import GraphConfig
from .errors import ConfigError

KeyPath = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Where each key of the file stands, so `where(("nodes", "answer", "model"))` gives 'file:12'."""

    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def where(self, path: KeyPath) -> str:
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return f"{self.file}:{line}"
        return self.file


def _collect_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            lines[child] = key_node.start_mark.line + 1
            _collect_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, (*path, index), lines)


def dotted(path: KeyPath) -> str:
    return ".".join(str(part) for part in path)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """`models.writer.base_url=http://h:9/v1`: set a key (YAML-typed value), creating dicts on the way."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{assignment}' should look like dotted.key=value")
    parts = key.strip().split(".")
    target: Any = raw
    for index, part in enumerate(parts[:-1]):
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise ConfigError(f"--set {key}: '{part}' is not an index of the list at "
                                  f"{'.'.join(parts[:index]) or 'top'}")
            target = target[int(part)]
        else:
            target = target.setdefault(part, {})
        if not isinstance(target, (dict, list)):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:index + 1])}' is a value, not a mapping")
    value = yaml.safe_load(text) if text.strip() else ""
    last = parts[-1]
    if isinstance(target, list):
        if not last.isdigit() or int(last) >= len(target):
            raise ConfigError(f"--set {key}: '{last}' is not an index of that list")
        target[int(last)] = value
    else:
        target[last] = value


RUNTIME_MODEL_KEYS = frozenset({"profile", "base_url", "max_concurrency", "timeout", "max_retries", "rpm", "tpm",
                                "adaptive", "batch_size", "batch_wait_ms", "price", "api_key_env", "structured"})
"""Where a model runs and how fast it is fed: none of these changes what a record contains."""


def config_hash(raw: dict[str, Any], base_dir: Path | None = None) -> str:
    """A short fingerprint of what shapes the data: prompts, nodes, edges, outputs, models' names and
    sampling parameters, the seed source, and the text of subgraph files. Not where or how fast it runs
    (`run:`, replicas, concurrency, budgets, `--endpoint`'s URL), so tuning never refuses a --resume.
    It is stored with every record and checked by --resume."""
    shaping = {key: value for key, value in raw.items() if key != "run" and not str(key).startswith("x-")}
    models = shaping.get("models")
    if isinstance(models, dict):
        shaping["models"] = {name: ({k: v for k, v in spec.items() if k not in RUNTIME_MODEL_KEYS}
                                    if isinstance(spec, dict) else spec) for name, spec in models.items()}
    if base_dir is not None:
        shaping["subgraph_files"] = _subgraph_texts(raw, base_dir)
    canonical = json.dumps(shaping, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _subgraph_texts(raw: dict[str, Any], base_dir: Path) -> dict[str, str]:
    """An edited subgraph file changes the data as surely as an edited node."""
    texts: dict[str, str] = {}
    nodes = raw.get("nodes")
    for name, spec in (nodes.items() if isinstance(nodes, dict) else []):
        if isinstance(spec, dict) and spec.get("type") == "subgraph" and isinstance(spec.get("graph"), str):
            try:
                texts[name] = (base_dir / spec["graph"]).read_text(encoding="utf-8", errors="replace")
            except OSError:
                texts[name] = ""  # reported by the subgraph node's own check
    return texts


@dataclass
class LoadedConfig:
    config: GraphConfig
    raw: dict[str, Any]
    source_map: SourceMap
    base_dir: Path
    hash: str


def load_config(path: str | Path, overrides: list[str] | None = None,
                endpoint: str | None = None) -> LoadedConfig:
    """Parse, override and type-check a graph file. Raises `ConfigError` naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the graph file ({error.strerror}); check the path",
                          where=str(path)) from None
    try:
        tree = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"not valid YAML ({problem})", where=where) from None
    if not isinstance(raw, dict):
        raise ConfigError("a graph file is a mapping with name, nodes, edges, ...", where=str(path))
    source_map = SourceMap(str(path))
    if tree is not None:
        _collect_lines(tree, (), source_map.lines)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    apply_profiles(raw, path.resolve().parent, source_map)
    if endpoint:
        point_models_at(raw, endpoint)
    base_dir = path.resolve().parent
    return LoadedConfig(validate_raw(raw, source_map), raw, source_map, base_dir, config_hash(raw, base_dir))


def apply_profiles(raw: dict[str, Any], base_dir: Path, source_map: SourceMap) -> None:
    """`profile: vllm` fills a model's keys from configs/vllm.yaml (or a YAML path); the graph's own keys win."""
    for name, spec in (raw.get("models") or {}).items():
        if not isinstance(spec, dict) or not spec.get("profile"):
            continue
        where = source_map.where(("models", name, "profile"))
        profile = _read_profile(str(spec["profile"]), base_dir, where, f"models.{name}.profile")
        raw["models"][name] = {**profile, **spec}


def _read_profile(profile: str, base_dir: Path, where: str, key: str) -> dict[str, Any]:
    from importlib import resources
    candidate = base_dir / profile
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        text = candidate.read_text(encoding="utf-8")
    else:
        packaged = resources.files("synthloom_configs") / f"{profile}.yaml"
        if not packaged.is_file():
            known = sorted(item.name[:-5] for item in resources.files("synthloom_configs").iterdir()
                           if item.name.endswith(".yaml"))
            raise ConfigError(f"no profile '{profile}' (known: {', '.join(known)}; or a .yaml path)",
                              where=where, key=key)
        text = packaged.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"profile '{profile}' is not a mapping of model keys", where=where, key=key)
    return data


def point_models_at(raw: dict[str, Any], endpoint: str) -> None:
    """`--endpoint URL`: every model (and the implicit default) becomes that OpenAI-compatible server;
    `--endpoint URL1,URL2` makes them replicas of one model."""
    models = raw.setdefault("models", {}) or {}
    raw["models"] = models
    if not models:
        models["default"] = {}
    for spec in models.values():
        spec["backend"] = "openai"
        spec["base_url"] = endpoint.split(",") if "," in endpoint else endpoint
        spec.setdefault("model", "default")
        spec.pop("path", None)


def validate_raw(raw: dict[str, Any], source_map: SourceMap) -> GraphConfig:
    """Top-level keys starting with `x-` are the user's own (YAML anchors for shared prompts), not config."""
    try:
        return GraphConfig.model_validate({key: value for key, value in raw.items() if not key.startswith("x-")})
    except ValidationError as error:
        first = error.errors()[0]
        loc = tuple(part for part in first["loc"] if not _is_union_tag(part))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}' (check the spelling; see the config reference in README)"
        elif first["type"] == "missing":
            message = f"missing required key '{loc[-1]}'"
        raise ConfigError(message, where=source_map.where(loc), key=dotted(loc)) from None


def _is_union_tag(part: Any) -> bool:
    """pydantic puts union member names ('list[MessageTemplate]', 'str') into locations; users never wrote them."""
    return isinstance(part, str) and ("[" in part or part in {"str", "function-after", "function-before"})

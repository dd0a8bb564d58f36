"""Read a graph file into a `GraphConfig`, keeping YAML line numbers so every error can point at its line."""
from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, did_you_mean
from ..sandbox.files import read_graph_bytes, read_graph_text
from .sampling import ALIASES, ENGINE_KEY, EXTRA_KEY, SENT_AS
from .schema import GraphConfig
from .spellings import modernize

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


def pinpoint(error: ConfigError, source_map: SourceMap) -> ConfigError:
    """The same error, pointing at the file and line of its key when it did not say where."""
    if error.where or not error.key:
        return error
    path = tuple(int(part) if part.isdigit() else part for part in error.key.split("."))
    return ConfigError(error.message, where=source_map.where(path), key=error.key)


def dotted(path: KeyPath) -> str:
    return ".".join(str(part) for part in path)


REQUEST_PARAMS = frozenset({*SENT_AS, *ALIASES, ENGINE_KEY, EXTRA_KEY})
"""Request parameters a `--set ...params.<name>=` may add (`models.sampling`); any other new name there is
taken for a typo."""


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """`models.writer.base_url=http://h:9/v1`: set a key (YAML-typed value), creating dicts on the way.

    A model or node the file does not have, or a request parameter nobody knows, is an error naming it: a
    misspelt `--set` must not be silently accepted. Keys of typed sections are checked by the schema."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{assignment}' should look like dotted.key=value")
    parts = key.strip().split(".")
    _check_override_names(raw, parts, key.strip())
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
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError) as error:
        raise ConfigError(f"--set {key}: the value is not valid YAML ({getattr(error, 'problem', error)})") \
            from None
    last = parts[-1]
    if isinstance(target, list):
        if not last.isdigit() or int(last) >= len(target):
            raise ConfigError(f"--set {key}: '{last}' is not an index of that list")
        target[int(last)] = value
    else:
        target[last] = value


def _check_override_names(raw: dict[str, Any], parts: list[str], key: str) -> None:
    section = parts[0]
    if section not in ("models", "nodes") or len(parts) < 2:
        return
    existing = raw.get(section) if isinstance(raw.get(section), dict) else {}
    assert isinstance(existing, dict)
    name = parts[1]
    implicit = {"default"} if section == "models" else set()
    if name not in existing and name not in implicit:
        known = ", ".join(sorted({str(item) for item in existing} | implicit)) or "none"
        raise ConfigError(f"--set {key}: the graph has no {section[:-1]} '{name}' ({section}: {known})")
    spec = existing.get(name)
    if len(parts) == 4 and parts[2] == "params":
        given = spec.get("params") if isinstance(spec, dict) else None
        is_function = isinstance(spec, dict) and spec.get("type") == "python"
        if parts[3] not in REQUEST_PARAMS and not is_function and not (isinstance(given, dict) and parts[3] in given):
            raise ConfigError(f"--set {key}: '{parts[3]}' is not a request parameter synthloom knows "
                              f"(e.g. temperature, max_tokens, top_p, stop, seed); check the spelling")


RUNTIME_MODEL_KEYS = frozenset({"profile", "base_url", "max_concurrency", "timeout", "max_retries", "rpm", "tpm",
                                "adaptive", "batch_size", "batch_wait_ms", "batch", "price", "api_key_env",
                                "structured"})
"""Where a model runs and how fast it is fed: none of these changes what a record contains."""


def config_hash(raw: dict[str, Any], base_dir: Path | None = None, read_folders: tuple[Path, ...] = ()) -> str:
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
        shaping["subgraph_files"] = _subgraph_texts(raw, base_dir, read_folders)
    canonical = json.dumps(shaping, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _subgraph_texts(raw: dict[str, Any], base_dir: Path, read_folders: tuple[Path, ...]) -> dict[str, str]:
    """An edited subgraph file changes the data as surely as an edited node."""
    texts: dict[str, str] = {}
    nodes = raw.get("nodes")
    for name, spec in (nodes.items() if isinstance(nodes, dict) else []):
        if isinstance(spec, dict) and spec.get("type") == "subgraph" and isinstance(spec.get("graph"), str):
            path = base_dir / spec["graph"]
            if not path.exists():
                texts[name] = ""  # reported by the subgraph node's own check
                continue
            # through the one reader: a FIFO, a device or a file outside the graph's folder is refused now
            texts[name] = read_graph_bytes(path, base_dir, f"nodes.{name}.graph",
                                           limit=MAX_YAML_BYTES, granted=read_folders).decode("utf-8", errors="replace")
    return texts


@dataclass
class LoadedConfig:
    config: GraphConfig
    raw: dict[str, Any]
    source_map: SourceMap
    base_dir: Path
    hash: str


def load_config(path: str | Path, overrides: list[str] | None = None,
                endpoint: str | None = None, read_folders: tuple[Path, ...] = ()) -> LoadedConfig:
    """Parse, override and type-check a graph file. Raises `ConfigError` naming file, line and key.
    `read_folders`: the folders the user allowed the graph to read (`--allow-read`), for its subgraph files."""
    path = Path(path)
    text = read_yaml_text(path, str(path))
    tree, raw = parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        line = tree.start_mark.line + 1 if tree is not None else 1
        raise ConfigError("a graph file is a mapping with name, nodes, edges, ...", where=f"{path}:{line}")
    source_map = SourceMap(str(path))
    if tree is not None:
        _collect_lines(tree, (), source_map.lines)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    apply_profiles(raw, path.resolve().parent, source_map, read_folders)
    if endpoint:
        point_models_at(raw, endpoint)
    modernize(raw, source_map)
    base_dir = path.resolve().parent
    return LoadedConfig(validate_raw(raw, source_map), raw, source_map, base_dir,
                        config_hash(raw, base_dir, read_folders))


MAX_YAML_BYTES = 5_000_000
MAX_YAML_VALUES = 200_000
"""Values a YAML file may stand for once its aliases are expanded (a 'billion laughs' file stands for 10**9)."""
MAX_YAML_DEPTH = 64


def read_yaml_text(path: Path, where: str, key: str | None = None) -> str:
    """A YAML file's text: a regular file, not too big, UTF-8; `ConfigError` otherwise."""
    try:
        if not path.is_file():
            problem = "it is a folder" if path.is_dir() else "it does not exist" if not path.exists() else \
                "it is not a regular file"
            raise ConfigError(f"cannot read the graph file {path} ({problem}); check the path", where=where,
                              key=key)
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_YAML_BYTES // 1_000_000} MB; a graph or profile "
                              f"file is small", where=where, key=key)
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1
        where = f"{path}:{line}" if where == str(path) else where
        raise ConfigError(f"not UTF-8 text (byte {error.start}); save the file as UTF-8", where=where, key=key) \
            from None
    except OSError as error:
        raise ConfigError(f"cannot read {path} ({error.strerror}); check the path", where=where, key=key) \
            from None


def parse_yaml(text: str, file: str, key: str | None = None) -> tuple[yaml.Node | None, Any]:
    """Compose, check bounds and duplicate keys, then construct. Every failure is one `ConfigError` line."""
    try:
        tree = yaml.compose(text, Loader=_DepthLoader)
        if tree is not None:
            _check_tree(tree, file, key)
        return tree, yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        position = getattr(error, "position", None)  # a ReaderError (a character YAML does not allow) has no mark
        line = mark.line + 1 if mark else text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        where = f"{file}:{line}"
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"not valid YAML ({problem})", where=where, key=key) from None
    except _TooDeep as error:
        raise ConfigError(f"nested more than {MAX_YAML_DEPTH} levels deep", where=f"{file}:{error.line}",
                          key=key) from None
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_YAML_DEPTH} levels deep", where=file, key=key) from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"a value cannot be read ({error})", where=file, key=key) from None


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _DepthLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types for its loaders
    """Composes as SafeLoader does, but stops past MAX_YAML_DEPTH levels at the node's own line, long before
    the composer's recursion would hit Python's limit (which took seconds and knew no line)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH + 1:
                raise _TooDeep(int(self.peek_event().start_mark.line) + 1)
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _check_tree(root: yaml.Node, file: str, key: str | None) -> None:
    """Refuse duplicate keys, nesting past MAX_YAML_DEPTH, and aliases that expand past MAX_YAML_VALUES.

    Sizes are memoised per node, so a file whose aliases stand for 10**9 values is measured in a few steps.
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        where = f"{file}:{node.start_mark.line + 1}"
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"nested more than {MAX_YAML_DEPTH} levels deep", where=where, key=key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        raise ConfigError(f"key '{key_node.value}' appears twice in one mapping; YAML would "
                                          f"silently keep the last", where=f"{file}:{key_node.start_mark.line + 1}",
                                          key=key)
                    seen.add(key_node.value)
                total += size(key_node, depth + 1) + size(value_node, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        elif node.tag == "tag:yaml.org,2002:int" and len(node.value) > 1000:
            raise ConfigError("an integer of more than 1000 digits", where=where, key=key)
        if total > MAX_YAML_VALUES:
            raise ConfigError(f"the file stands for more than {MAX_YAML_VALUES} values once its aliases are "
                              f"expanded; use fewer or smaller aliases", where=where, key=key)
        sizes[id(node)] = total
        return total

    size(root, 0)


def apply_profiles(raw: dict[str, Any], base_dir: Path, source_map: SourceMap,
                   read_folders: tuple[Path, ...] = ()) -> None:
    """`profile: vllm` fills a model's keys from configs/vllm.yaml (or a YAML path); the graph's own keys win.
    A YAML path is a file the graph reads (graph_files): beside the graph or in a folder the user allowed."""
    models = raw.get("models")
    if not isinstance(models, dict):
        return  # the schema check says what is wrong with it
    for name, spec in models.items():
        if not isinstance(spec, dict) or not spec.get("profile"):
            continue
        where = source_map.where(("models", name, "profile"))
        profile = _read_profile(str(spec["profile"]), base_dir, where, f"models.{name}.profile", read_folders)
        raw["models"][name] = {**profile, **spec}


PROFILE_NAME = re.compile(r"[A-Za-z0-9][\w-]*")
"""A packaged profile's name (configs/<name>.yaml): never a path."""


def _read_profile(profile: str, base_dir: Path, where: str, key: str,
                  read_folders: tuple[Path, ...]) -> dict[str, Any]:
    from importlib import resources
    candidate = base_dir / Path(profile).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        try:
            text = read_graph_text(candidate, base_dir, key, limit=MAX_YAML_BYTES, what="profile ",
                                   granted=read_folders)
        except ConfigError as error:
            raise ConfigError(error.message, where=where, key=key) from None
        file = str(candidate)
    else:
        packaged = resources.files("synthloom_configs") / f"{profile}.yaml"
        if not PROFILE_NAME.fullmatch(profile) or not packaged.is_file():
            known = sorted(item.name[:-5] for item in resources.files("synthloom_configs").iterdir()
                           if item.name.endswith(".yaml"))
            raise ConfigError(f"no profile '{profile}' (known: {', '.join(known)}; or a .yaml path)",
                              where=where, key=key)
        text, file = packaged.read_text(encoding="utf-8"), str(packaged)
    try:
        _, data = parse_yaml(text, file, key)
    except ConfigError as error:
        raise ConfigError(f"profile '{profile}': {error.message} ({error.where})", where=where, key=key) from None
    if not isinstance(data, dict):
        raise ConfigError(f"profile '{profile}' is not a mapping of model keys", where=where, key=key)
    return data


def point_models_at(raw: dict[str, Any], endpoint: str) -> None:
    """`--endpoint URL`: every model (and the implicit default) becomes that OpenAI-compatible server;
    `--endpoint URL1,URL2` makes them replicas of one model. A model that names none is the one the server
    serves, asked when the run starts (`OpenAIClient.name_the_model`)."""
    models = raw.setdefault("models", {}) or {}
    if not isinstance(models, dict):
        return  # the schema check says what is wrong with it
    raw["models"] = models
    if not models:
        models["default"] = {}
    for spec in models.values():
        if not isinstance(spec, dict):
            continue
        spec["backend"] = "openai"
        spec["base_url"] = endpoint.split(",") if "," in endpoint else endpoint
        spec.pop("path", None)
        if isinstance(spec.get("params"), dict):  # an in-process engine's settings: the server has its own
            spec["params"] = {key: value for key, value in spec["params"].items() if key != ENGINE_KEY}


def validate_raw(raw: dict[str, Any], source_map: SourceMap) -> GraphConfig:
    """Top-level keys starting with `x-` are the user's own (YAML anchors for shared prompts), not config."""
    try:
        return GraphConfig.model_validate({key: value for key, value in raw.items() if not key.startswith("x-")})
    except ValidationError as error:
        first = first_error(error)
        loc = tuple(part for part in first["loc"] if not _is_union_tag(part))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = unknown_key_message(str(loc[-1]), valid_keys(GraphConfig, loc[:-1]), "key")
        elif first["type"] == "missing":
            message = f"missing required key '{loc[-1]}'"
        raise ConfigError(message, where=source_map.where(loc), key=dotted(loc)) from None


def first_error(error: ValidationError) -> Any:
    """The error to report: the first, unless it is a missing key beside an unknown one (`rol:` for
    `role:`), where the unknown key, with its closest spelling, says what to fix."""
    errors = error.errors()
    first = errors[0]
    if first["type"] == "missing":
        for other in errors:
            if other["type"] == "extra_forbidden" and other["loc"][:-1] == first["loc"][:-1]:
                return other
    return first


def unknown_key_message(key: str, valid: list[str], noun: str, owner: str = "") -> str:
    """"unknown key 'edgse'; did you mean 'edges'? (valid keys here: ...)": the closest, then them all."""
    listed = ", ".join(valid) if valid else "see the config reference in README"
    return f"unknown {noun} '{key}'{owner}{did_you_mean(key, valid)} (valid {noun}s here: {listed})"


def valid_keys(model: type[BaseModel], path: KeyPath) -> list[str]:
    """The keys a mapping at `path` inside `model` may have (aliases as the file spells them), found by
    following the field types down the path: through unions, lists (an index) and dicts (a key)."""
    kinds: list[Any] = [model]
    for part in path:
        kinds = [inner for kind in kinds for inner in _step(kind, part)]
    keys: list[str] = []
    for kind in kinds:
        for member in _members(kind):
            if isinstance(member, type) and issubclass(member, BaseModel):
                keys += [info.alias or name for name, info in member.model_fields.items()]
    return list(dict.fromkeys(keys))


def _members(kind: Any) -> list[Any]:
    """A union's members (Optional included), else the type itself."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return [inner for member in typing.get_args(kind) for inner in _members(member)]
    return [kind]


def _step(kind: Any, part: str | int) -> list[Any]:
    found: list[Any] = []
    for member in _members(kind):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
            for name, info in member.model_fields.items():
                if part in (name, info.alias):
                    found.append(info.annotation)
        elif origin in (list, tuple) and isinstance(part, int) and args:
            found.append(args[0])
        elif origin is dict and len(args) == 2:
            found.append(args[1])
    return found


def _is_union_tag(part: Any) -> bool:
    """pydantic puts union member names ('list[MessageTemplate]', 'str') into locations; users never wrote them."""
    return isinstance(part, str) and ("[" in part or part in {"str", "function-after", "function-before"})

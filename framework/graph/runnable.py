"""Turn a validated config into a runnable graph (networkx) and check it before any call is made:
references, reachability, bounded loops, and that every key a template reads is written upstream."""
from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from ..config.loader import KeyPath, LoadedConfig, SourceMap, dotted, first_error, unknown_key_message, valid_keys
from ..config.sampling import params_problem
from ..config.schema import MESSAGE_PARTS, GraphConfig, OutputConfig
from ..errors import ConfigError, did_you_mean, one_line
from ..sandbox.code_policy import CodePolicy
from ..sandbox.expressions import Condition
from ..sandbox.templates import Template
from ..tools.toolbox import Toolbox
from .node import ANY_KEY, Node, NodeParams
from .registry import import_object, resolve_node_type

RESERVED_KEYS = {"id"}


@dataclass(frozen=True)
class Edge:
    index: int
    source: str
    target: str
    when: Condition | None
    max_visits: int | None


@dataclass
class Graph:
    """The runnable form of a graph file."""

    loaded: LoadedConfig
    nodes: dict[str, Node[Any]]
    dag: nx.DiGraph
    edges_from: dict[str, list[Edge]]
    starts: list[str]
    forward_ancestors: dict[str, frozenset[str]]
    seed_columns: set[str] = field(default_factory=set)
    unchecked: list[str] = field(default_factory=list)
    """Nodes whose writes are unknown, so keys read after them (and outputs) could not be checked."""
    code: CodePolicy = field(default_factory=CodePolicy)
    """What Python the graph may import, and (`code.uses`) what it did import."""
    tools: Toolbox = field(default_factory=Toolbox)
    """The graph's `tools:` entries, their code consented to; MCP servers start with the run."""

    @property
    def config(self) -> GraphConfig:
        return self.loaded.config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def base_dir(self) -> Path:
        return self.loaded.base_dir

    def models_used(self) -> list[str]:
        """The model names the graph's nodes call, sorted."""
        return sorted({model for node in self.nodes.values() for model in node.models()})

    def mermaid(self) -> str:
        lines = ["flowchart TD"]
        for name in self.nodes:
            label = f"{mermaid_text(name)}<br/><small>{mermaid_text(graph_type(self, name))}</small>"
            lines.append(f'    {_mermaid_id(name)}["{label}"]')
        for edges in self.edges_from.values():
            for edge in edges:
                notes = [edge.when.source] if edge.when else []
                if edge.max_visits:
                    notes.append(f"max {edge.max_visits}")
                arrow = f' -- "{mermaid_text(", ".join(notes))}" --> ' if notes else " --> "
                lines.append(f"    {_mermaid_id(edge.source)}{arrow}{_mermaid_id(edge.target)}")
        return "\n".join(lines)


def graph_type(graph: Graph, name: str) -> str:
    return str(graph.config.nodes[name]["type"])


def _mermaid_id(name: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in name)


_MERMAID_UNSAFE = re.compile(r'["`#]|[\x00-\x1f\x7f]|<(?=[A-Za-z/!?])')


def mermaid_text(text: str) -> str:
    """Text a graph gives (a node name, a type, a condition) as Mermaid label text: quotes, backticks, `#`,
    control characters and a `<` that could open a tag become entity codes (`#60;`), so nothing in it can
    close the label, the diagram or the card's code fence, or be read as HTML; `words < 10` stays readable."""
    return _MERMAID_UNSAFE.sub(lambda match: f"#{ord(match.group(0))};", text)


_building: ContextVar[Path | None] = ContextVar("graph_folder", default=None)


def building_folder() -> Path:
    """The folder of the graph file being built: a subgraph node's `graph:` path is relative to it."""
    return _building.get() or Path.cwd()


def build_graph(loaded: LoadedConfig, seed_columns: Iterable[str] = (), code: CodePolicy | None = None) -> Graph:
    """Build and check a graph; the Python it names is imported only as `code` allows (default: the
    graph's folder, node types and the user's SYNTHLOOM_ALLOW_CODE), and its models' keys go only to the
    hosts `code.key_hosts` allows. Subgraph files are built here too, under the same policy."""
    config, smap = loaded.config, loaded.source_map
    if code is None:
        code = CodePolicy.for_graph(loaded.base_dir, requested=config.run.allow_code)
    code.keys.extend(code.key_hosts.check(config.models, {name: smap.where(("models", name, "base_url"))
                                                          for name in config.models}))
    folder = _building.set(loaded.base_dir)
    try:
        with code.active():
            toolbox = _toolbox(config, smap, code, loaded.base_dir)
            nodes = {name: _instantiate(name, spec, smap, code) for name, spec in config.nodes.items()}
    finally:
        _building.reset(folder)
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(nodes)
    edges_from: dict[str, list[Edge]] = {name: [] for name in nodes}
    for index, edge_config in enumerate(config.edges):
        for end, value in (("from", edge_config.source), ("to", edge_config.target)):
            if value not in nodes:
                raise ConfigError(f"edge {end} unknown node '{value}'{did_you_mean(value, nodes)} (nodes: "
                                  f"{', '.join(nodes)})",
                                  where=smap.where(("edges", index)), key=f"edges.{index}")
        when = _condition(edge_config.when, smap, ("edges", index, "when"))
        edge = Edge(index, edge_config.source, edge_config.target, when, edge_config.max_visits)
        edges_from[edge.source].append(edge)
        graph.add_edge(edge.source, edge.target, key=index, edge=edge)

    starts = [name for name in nodes if all(source == name for source, _ in graph.in_edges(name))]
    if not starts:
        raise ConfigError("no start node: every node has an incoming edge, so no record can enter",
                          where=smap.where(("edges",)), key="edges")
    _check_reachable(graph, starts, smap)
    _check_loops_bounded(graph, smap)
    dag = _forward_dag(graph, starts)
    ancestors = {name: frozenset(nx.ancestors(dag, name)) for name in nodes}
    result = Graph(loaded, nodes, dag, edges_from, starts, ancestors, set(seed_columns), code=code,
                   tools=toolbox)
    _check_models(result, smap)
    _check_tool_entries(result, smap)
    _check_keys(result, graph, smap)
    _check_parallel_writes(result, smap)
    return result


class ListedNode(Node[NodeParams]):
    """Stands for a node whose graph-folder code `validate` listed without running: its keys are unknown."""

    def __init__(self, name: str, spec: dict[str, Any]):
        super().__init__(name, NodeParams())
        self.spec = spec

    def writes(self) -> set[str]:
        return {ANY_KEY}

    def models(self) -> set[str]:
        model = self.spec.get("model")
        return {model} if isinstance(model, str) else set()


CODE_KEYS = ("type", "function", "tools", "verifier", "output_schema")
"""Node keys that name code (`package.module:Name`); a langgraph node's `graph` too."""


def code_references(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(key path under the node, reference) for every piece of code a node's spec names."""
    found: list[tuple[str, str]] = []
    keys = (*CODE_KEYS, "graph") if spec.get("type") == "langgraph" else CODE_KEYS
    for key in keys:
        value = spec.get(key)
        values = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in values:
            if isinstance(item, str) and ":" in item:
                found.append((key if index is None else f"{key}.{index}", item))
    return found


def _instantiate(name: str, spec: dict[str, Any], smap: SourceMap, code: CodePolicy) -> Node[Any]:
    """The node; while listing (`validate`), a node naming graph-folder code is a `ListedNode`, after every
    reference it makes has been checked and listed without running any of it."""
    listed, used = code.listed, len(code.uses)
    if not code.run_folder_code:
        for key, reference in code_references(spec):
            code.at_node(name)
            try:
                import_object(reference, node_type=key == "type")
            except ConfigError as error:
                if code.listed > listed:
                    continue
                path = ("nodes", name, *(int(part) if part.isdigit() else part for part in key.split(".")))
                raise ConfigError(error.message, where=smap.where(path), key=dotted(path)) from None
        if code.listed > listed:
            return ListedNode(name, spec)
        del code.uses[used:]  # constructing the node lists them again
    try:
        return _construct(name, spec, smap, code)
    except ConfigError:
        if code.listed > listed:  # a plugin's own reference to graph-folder code, listed not run
            return ListedNode(name, spec)
        raise


def _construct(name: str, spec: dict[str, Any], smap: SourceMap, code: CodePolicy) -> Node[Any]:
    path: KeyPath = ("nodes", name)
    type_name = spec["type"]
    code.at_node(name)
    try:
        node_type = resolve_node_type(type_name)
    except ConfigError as error:
        raise ConfigError(error.message, where=smap.where((*path, "type")), key=f"nodes.{name}.type") from None
    params = {key: value for key, value in spec.items() if key != "type"}
    try:
        return node_type(name, node_type.Params.model_validate(params))
    except ValidationError as error:
        first = first_error(error)
        loc = (*path, *first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = unknown_key_message(str(first["loc"][-1]), valid_keys(node_type.Params, first["loc"][:-1]),
                                          "parameter", f" for a {type_name} node")
        elif first["type"] == "missing":
            message = f"a {type_name} node needs '{first['loc'][-1]}'"
        raise ConfigError(message + _described(node_type, first["loc"]), where=smap.where(loc), key=dotted(loc)) \
            from None
    except ConfigError as error:
        key = error.key or dotted(path)
        where = error.where or smap.where(tuple(int(part) if part.isdigit() else part for part in key.split(".")))
        raise ConfigError(error.message, where=where, key=key) from None
    except (ValueError, TypeError, OverflowError) as error:
        raise ConfigError(one_line(error), where=smap.where(path), key=dotted(path)) from None
    except (RecursionError, MemoryError):
        raise ConfigError("too deeply nested or too big to check", where=smap.where(path), key=dotted(path)) \
            from None


def _described(node_type: type[Node[Any]], loc: tuple[str | int, ...]) -> str:
    """" (field: what it is)" from the parameter's `Field(description=...)`, which the node type's author
    writes for exactly this; "" when there is none."""
    field = node_type.Params.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    return f" ({loc[0]}: {one_line(field.description, 200)})" if field is not None and field.description else ""


def _condition(source: str | None, smap: SourceMap, path: KeyPath) -> Condition | None:
    if source is None:
        return None
    try:
        return Condition(source)
    except ValueError as error:
        raise ConfigError(str(error), where=smap.where(path), key=dotted(path)) from None


def _check_reachable(graph: nx.MultiDiGraph, starts: list[str], smap: SourceMap) -> None:
    reached: set[str] = set(starts)
    for start in starts:
        reached |= nx.descendants(graph, start)
    for name in graph.nodes:
        if name not in reached:
            raise ConfigError(f"node '{name}' cannot be reached from a start node ({', '.join(starts)}); "
                              f"add an edge to it or remove it", where=smap.where(("nodes", name)),
                              key=f"nodes.{name}")


def _check_loops_bounded(graph: nx.MultiDiGraph, smap: SourceMap) -> None:
    for cycle in nx.simple_cycles(nx.DiGraph(graph)):
        pairs = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
        bounded = any(data["edge"].max_visits for a, b in pairs
                      for data in graph.get_edge_data(a, b).values())
        if not bounded:
            first = next(iter(graph.get_edge_data(*pairs[0]).values()))["edge"]
            loop = " -> ".join([*cycle, cycle[0]])
            raise ConfigError(f"loop {loop} has no max_visits; give one of its edges max_visits: N",
                              where=smap.where(("edges", first.index)), key=f"edges.{first.index}")


def _forward_dag(graph: nx.MultiDiGraph, starts: list[str]) -> nx.DiGraph:
    """The graph without its back edges (those closing a loop), found by depth-first search from the starts."""
    dag = nx.DiGraph()
    dag.add_nodes_from(graph.nodes)
    on_stack: set[str] = set()
    done: set[str] = set()

    def visit(name: str) -> None:
        on_stack.add(name)
        for _, target in graph.out_edges(name):
            if target in on_stack:
                continue  # a back edge
            dag.add_edge(name, target)
            if target not in done:
                visit(target)
        on_stack.discard(name)
        done.add(name)

    for start in starts:
        visit(start)
    return dag


def _toolbox(config: GraphConfig, smap: SourceMap, code: CodePolicy, base_dir: Path) -> Toolbox:
    try:
        return Toolbox.build(config.tools, code, base_dir)
    except ConfigError as error:
        path = tuple(int(part) if part.isdigit() else part for part in (error.key or "tools").split("."))
        raise ConfigError(error.message, where=smap.where(path), key=error.key) from None


def _check_tool_entries(graph: Graph, smap: SourceMap) -> None:
    for name, node in graph.nodes.items():
        for entry in sorted(node.tool_entries()):
            try:
                graph.tools.check_entry(entry)
            except ConfigError as error:
                raise ConfigError(error.message + did_you_mean(entry, graph.config.tools),
                                  where=smap.where(("nodes", name, "tools")), key=f"nodes.{name}.tools") from None


def _check_models(graph: Graph, smap: SourceMap) -> None:
    known = set(graph.config.models) | {"default"}
    for name, node in graph.nodes.items():
        for model in node.models():
            if model not in known:
                raise ConfigError(f"unknown model '{model}'{did_you_mean(model, known)} (models: "
                                  f"{', '.join(sorted(known))})",
                                  where=smap.where(("nodes", name, "model")), key=f"nodes.{name}.model")
    for name in sorted(graph.models_used()):
        config = graph.config.models.get(name)
        if config is not None and config.backend == "local" and config.path and not Path(config.path).is_file():
            # found here, before a run starts, rather than as every record's failure once the engine loads
            raise ConfigError(f"model file {config.path} does not exist; give a GGUF file, or leave path out "
                              f"for the embedded default", where=smap.where(("models", name, "path")),
                              key=f"models.{name}.path")
    _check_params(graph, smap)


def _check_params(graph: Graph, smap: SourceMap) -> None:
    """Every `params` key, a model's or a node's, must mean something to the backend of each model it is
    sent to (`models.sampling`): a server drops a name it does not know without a word."""
    backends = {name: config.backend for name, config in graph.config.models.items()}
    places: list[tuple[KeyPath, dict[str, Any], set[str]]] = [
        (("models", name, "params"), config.params, {name}) for name, config in graph.config.models.items()]
    for name, node in graph.nodes.items():
        node_params = node.params
        if isinstance(getattr(node_params, "params", None), dict):
            places.append((("nodes", name, "params"), node_params.params, node.models()))
        for field_name in type(node_params).model_fields:  # per-role params (conversation roles)
            items = getattr(node_params, field_name)
            for index, item in enumerate(items if isinstance(items, list) else ()):
                if isinstance(getattr(item, "params", None), dict) and isinstance(getattr(item, "model", None), str):
                    places.append((("nodes", name, field_name, index, "params"), item.params, {item.model}))
    for path, params, models in places:
        for model in sorted(models):
            problem = params_problem(params, backends.get(model, "local"))
            if problem is not None:
                key, message = problem
                raise ConfigError(f"{message} (model '{model}')", where=smap.where((*path, key)),
                                  key=dotted((*path, key)))


def _check_keys(graph: Graph, full: nx.MultiDiGraph, smap: SourceMap) -> None:
    """A key a node reads must come from the seed or from a node that can run before it."""
    base = graph.seed_columns | RESERVED_KEYS
    writes = {name: node.writes() for name, node in graph.nodes.items()}
    everything = base.union(*writes.values())
    readers = _Readers.of(graph, writes)
    for name, node in graph.nodes.items():
        upstream = nx.ancestors(full, name)
        if any(ANY_KEY in writes[other] for other in upstream) or not graph.seed_columns and \
                graph.config.seed.source.type != "none":
            continue
        available = base.union(*(writes[other] for other in upstream))
        missing = sorted(key for key in node.reads() if key not in available)
        if missing:
            _blame_misspelt_writer(graph, missing[0], f"node '{name}'", upstream, readers, smap)
            path = ("nodes", name, *_locate_word(graph.config.nodes[name], missing[0]))
            raise ConfigError(_missing_message(missing, name, graph) + did_you_mean(missing[0], available),
                              where=smap.where(path), key=dotted(path))
    for edges in graph.edges_from.values():
        for edge in edges:
            if edge.when is None:
                continue
            upstream = nx.ancestors(full, edge.source) | {edge.source}
            if any(ANY_KEY in writes[other] for other in upstream):
                continue
            available = base.union(*(writes[other] for other in upstream))
            missing = sorted(edge.when.names - available)
            if missing:
                _blame_misspelt_writer(graph, missing[0], f"the condition of edges.{edge.index}", upstream,
                                       readers, smap)
                raise ConfigError(f"condition reads {', '.join(missing)}, which nothing before it writes"
                                  f"{did_you_mean(missing[0], available)}",
                                  where=smap.where(("edges", edge.index, "when")), key=f"edges.{edge.index}.when")
    graph.unchecked = [name for name, keys in writes.items() if ANY_KEY in keys]
    if graph.unchecked:
        return
    for index, output in enumerate(graph.config.outputs):
        try:
            missing = sorted(output_reads(output) - everything)
        except ValueError as error:
            raise ConfigError(str(error), where=smap.where(("outputs", index)), key=f"outputs.{index}") from None
        if missing:
            _blame_misspelt_writer(graph, missing[0], f"output '{output.name}'", set(graph.nodes), readers, smap)
            raise ConfigError(f"output '{output.name}' reads {', '.join(missing)}, which no node or seed "
                              f"column gives{did_you_mean(missing[0], everything)}",
                              where=smap.where(("outputs", index)), key=f"outputs.{index}")


@dataclass
class _Readers:
    """How often each key is read (by nodes, conditions and outputs), and per node the keys it writes that
    nothing reads: where a misspelt `output:` shows itself."""

    counts: Counter[str]
    unread: dict[str, set[str]]

    @classmethod
    def of(cls, graph: Graph, writes: dict[str, set[str]]) -> _Readers:
        counts: Counter[str] = Counter()
        for node in graph.nodes.values():
            counts.update(node.reads())
        for edges in graph.edges_from.values():
            for edge in edges:
                counts.update(edge.when.names if edge.when else ())
        for output in graph.config.outputs:
            try:
                counts.update(output_reads(output))
            except ValueError:
                pass  # reported where the outputs are checked
        unread = {name: {key for key in keys - {ANY_KEY} if not counts[key]} for name, keys in writes.items()}
        return cls(counts, unread)


def _blame_misspelt_writer(graph: Graph, key: str, reader: str, writers: Iterable[str], readers: _Readers,
                           smap: SourceMap) -> None:
    """`key` is read but never written, and a node that could have written it writes a near spelling that
    nothing reads: one of the two is misspelt. The writer is blamed (pointing at its line) when the evidence
    says its spelling is the odd one: the read key is the writer's own name (`question` writing `qestion`),
    or more than one place reads it; otherwise the reader is, with the writer's spelling suggested."""
    for writer in sorted(writers):
        close = difflib.get_close_matches(key, sorted(readers.unread[writer]), n=1, cutoff=0.6)
        if not close:
            continue
        written = close[0]
        if (key == writer) + (readers.counts[key] > 1) > (written == writer):
            path = ("nodes", writer, *_locate_word(graph.config.nodes[writer], written))
            raise ConfigError(f"node '{writer}' writes '{written}', which nothing reads, while {reader} reads "
                              f"'{key}', which nothing writes; did you mean '{key}'?", where=smap.where(path),
                              key=dotted(path))
        return


def _check_parallel_writes(graph: Graph, smap: SourceMap) -> None:
    """Two nodes that can run side by side for one record must not write the same key: which update wins
    would depend on timing. Side by side means neither runs before the other, and one node leads to both
    through edges without conditions (branches behind exclusive `when:`s may write the same key)."""
    unconditional = nx.DiGraph()
    unconditional.add_nodes_from(graph.nodes)
    unconditional.add_edges_from((edge.source, edge.target) for edges in graph.edges_from.values() for edge in edges
                                 if edge.when is None and graph.dag.has_edge(edge.source, edge.target))
    writers: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        for key in node.writes() - {ANY_KEY}:
            writers.setdefault(key, []).append(name)
    for key, names in sorted(writers.items()):
        for index, first in enumerate(names):
            for second in names[index + 1:]:
                if first in graph.forward_ancestors[second] or second in graph.forward_ancestors[first]:
                    continue
                leads_to_first = nx.ancestors(unconditional, first) | {first}
                leads_to_second = nx.ancestors(unconditional, second) | {second}
                both_start = first in graph.starts and second in graph.starts
                if both_start or leads_to_first & leads_to_second:
                    raise ConfigError(f"nodes '{first}' and '{second}' run side by side and both write '{key}', "
                                      f"so which value stays would depend on timing; give one another output key "
                                      f"or order them with an edge", where=smap.where(("nodes", second)),
                                      key=f"nodes.{second}")


def _locate_word(spec: Any, word: str) -> tuple[str | int, ...]:
    """The key path in a node's spec of the first string that mentions `word`; () when none does (the node
    reads it through its code, not its YAML)."""
    found = _locate(spec, word)
    return () if found == ("",) else found


def _locate(spec: Any, word: str) -> tuple[str | int, ...]:
    """The key path of the first string in a node's spec that mentions `word`, to point at its line."""
    if isinstance(spec, str):
        return () if word in spec else ("",)
    items = spec.items() if isinstance(spec, dict) else enumerate(spec) if isinstance(spec, list) else []
    for key, value in items:
        found = _locate(value, word)
        if found != ("",):
            return (key, *found)
    return ("",)


def _missing_message(missing: list[str], name: str, graph: Graph) -> str:
    return (f"node '{name}' reads {', '.join(missing)}, which no upstream node writes and the seed does not "
            f"have (seed columns: {', '.join(sorted(graph.seed_columns)) or 'none'})")


def output_reads(output: OutputConfig) -> set[str]:
    keys: set[str] = set()
    for part in MESSAGE_PARTS:
        key = output.source_key(part)
        if key is not None:
            keys.add(key)
        for message in output.templates(part) or ():
            keys |= Template(message.content).variables
    if output.pairs:
        keys.add(output.pairs)
    if output.tools_from:
        keys.add(output.tools_from)
    keys.update(output.fields or ())
    if output.when:
        keys |= Condition(output.when).names
    for expression in output.metadata.values():
        keys |= Condition(expression).names
    return keys

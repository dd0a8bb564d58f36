"""`subgraph`: another graph file used as one node, so a recipe (a critic-refine loop, a suggester/editor
round) is written once and reused. The child graph runs for the record through the same per-record walk as
the top-level graph (`synthloom.engine.walk`), on a state holding only its `inputs`; its `outputs` are copied back.

The child file is read and built when the parent is built (its path is relative to the parent graph file),
so `validate` checks it, lists the Python it names and where its models' keys go, and refuses what `run`
would. The child may name Python and send keys only as the parent graph may (the parent's folder,
allow-list and key hosts, not its own).
"""
from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field
from synthloom.config.loader import load_config
from synthloom.config.schema import ModelConfig
from synthloom.engine.walk import GraphWalk
from synthloom.errors import ConfigError
from synthloom.graph.context import RunContext
from synthloom.graph.node import ANY_KEY, Drop, Node, NodeParams
from synthloom.graph.runnable import Graph, build_graph, building_folder
from synthloom.sandbox.code_policy import CodeUse, current_policy
from synthloom.sandbox.files import checked_path, open_graph_file

from .state_map import KeyMap, pick

_loading: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("subgraph_files", default=())
"""The chain of subgraph files being set up, to refuse a graph that includes itself."""


class SubgraphParams(NodeParams):
    graph: str = Field(description="the child graph file, relative to this graph file")
    inputs: KeyMap = Field(default_factory=dict, description="{child key: our key}: the child's starting state")
    outputs: KeyMap = Field(description="{our key: child key}: what comes back into this record")


class Subgraph(Node[SubgraphParams]):
    """Run another graph file as one node: map keys in, walk its nodes for the record, map keys out."""

    def __init__(self, name: str, params: SubgraphParams):
        super().__init__(name, params)
        self.child: Graph | None = None
        self.walk: GraphWalk | None = None
        self.child_ctx: RunContext | None = None
        self.code = current_policy()
        if not params.outputs:
            raise ValueError("outputs: name at least one {our key: child key} to bring back")
        self.code.uses.append(CodeUse(self.code.where, params.graph, "a subgraph file, under this graph's rules"))
        key, folder = f"nodes.{name}.graph", building_folder()
        path = checked_path(folder / params.graph, folder, key, granted=self.code.read_folders)
        if path.exists():  # a missing file is reported by load_config, naming the subgraph
            with open_graph_file(path, folder, key, granted=self.code.read_folders):
                pass  # a regular file: a FIFO or a device is refused here, not read by the YAML loader
        chain = _loading.get()
        if path in chain:
            loop = " -> ".join(str(part) for part in (*chain, path))
            raise ConfigError(f"subgraph includes itself ({loop})", key=f"nodes.{name}.graph")
        token = _loading.set((*chain, path))
        try:
            self.child = self._load(path)
        finally:
            _loading.reset(token)

    def reads(self) -> set[str]:
        return set(self.params.inputs.values())

    def writes(self) -> set[str]:
        return set(self.params.outputs)

    async def setup(self, ctx: RunContext) -> None:
        if self.child is None:
            raise RuntimeError("subgraph node set up without its child graph")
        _merge_models(ctx, self.child.config.models)
        await ctx.models.prepare(self.child.models_used())  # a missing key or model file: a config error now
        # the child's own tools: entries (its MCP sessions open in its nodes' setup, close in teardown)
        self.child_ctx = dataclasses.replace(ctx, base_dir=self.child.base_dir, tools=self.child.tools)
        ctx.tools.nested[self.name] = self.child.tools  # its hung tool threads count in the run's manifest
        for node in self.child.nodes.values():
            await node.setup(self.child_ctx)
        self.walk = GraphWalk(self.child, self.child_ctx)

    def _load(self, path: Path) -> Graph:
        try:
            with self.code.inside_subgraph(self.name):  # `validate` lists the child's code as nodes.<us>.<node>
                child = build_graph(load_config(path, read_folders=self.code.read_folders),
                                    seed_columns=set(self.params.inputs), code=self.code)
        except ConfigError as error:
            raise ConfigError(f"in subgraph '{self.name}': {error.message}", where=error.where or str(path),
                              key=error.key) from None
        written = set(self.params.inputs).union(*(node.writes() for node in child.nodes.values()))
        missing = sorted(set(self.params.outputs.values()) - written)
        if missing and ANY_KEY not in written:
            raise ConfigError(f"outputs: the subgraph {path.name} writes no '{missing[0]}' (it writes: "
                              f"{', '.join(sorted(written))})", key=f"nodes.{self.name}.outputs")
        for key, node in child.nodes.items():
            node.name = f"{self.name}.{key}"  # its calls and stats, told apart from a parent node's
        return child

    async def teardown(self, ctx: RunContext) -> None:
        if self.child is not None and self.child_ctx is not None:
            for node in self.child.nodes.values():
                await node.teardown(self.child_ctx)
            await self.child.tools.close()

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any] | Drop:
        if self.walk is None:
            raise RuntimeError("subgraph node run before its setup")
        child_state = {"id": state["id"], **pick(state, self.params.inputs, f"subgraph '{self.name}' inputs")}
        outcome = await self.walk.walk(child_state)
        if outcome is not None:
            node, drop = outcome
            return Drop(drop.reason, {"node": node, **(drop.detail or {})})
        return pick(child_state, self.params.outputs, f"subgraph '{self.name}' outputs")


def _merge_models(ctx: RunContext, child_models: dict[str, ModelConfig]) -> None:
    """Child models join the run's pool; where a name is in both, the parent's own config wins. The parent's
    implicit embedded `default` counts as missing while nothing of the parent has used it."""
    pool = ctx.models
    for name, config in child_models.items():
        implicit_default = name == "default" and name not in pool.usage and \
            pool.configs.get(name) == ModelConfig(backend="local")
        if name not in pool.configs or implicit_default:
            pool.configs[name] = config

"""What a node sees of the run besides its record: the models, its own stats, and state shared across
records (a task pool, a dedup index) guarded by a lock."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Container
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..models.base import Completion, LLMRequest
from ..models.clients import ModelPool
from ..models.stats import NodeStats
from ..sandbox.files import read_graph_text
from ..sandbox.run_paths import path_in_run
from ..tools.toolbox import Toolbox
from .record_pool import POOL_DIR, RecordPool
from .shared_state import LocalSharedState, SharedIndex, SharedStateProvider

T = TypeVar("T")


@dataclass
class RecordUsage:
    """What one record's LLM calls took; it goes into the record's metadata."""

    calls: int = 0
    retries: int = 0
    tokens: int = 0
    tool_calls: dict[str, int] = field(default_factory=dict)
    """Tool calls per `tools:` entry, for the entries' per-record budgets (not in the metadata)."""

    def as_dict(self) -> dict[str, int]:
        return {"llm_calls": self.calls, "retries": self.retries, "tokens": self.tokens}


class CallRecorder(Protocol):
    """Where a node step's model and tool calls are noted (the engine's `StepTrace`)."""

    def add_call(self, model: str, request: LLMRequest, completion: Completion | None,
                 error: BaseException | None = None) -> None: ...

    def add_tool_call(self, round_number: int, tool: str, arguments: Any, result: str, ok: bool,
                      seconds: float) -> None: ...


current_step: ContextVar[CallRecorder | None] = ContextVar("current_step", default=None)
"""Set by the engine's walk around each node step (see engine/trace.py), so `complete` notes each call in the
step that made it, even from a nested subgraph or a parallel branch."""

record_usage: ContextVar[RecordUsage | None] = ContextVar("record_usage", default=None)
"""Set by the scheduler for each record's task; asyncio copies it into the tasks that record starts."""


@dataclass
class Shared:
    """One cross-record object and the lock to hold while reading-then-writing it."""

    value: Any
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class RunContext:
    models: ModelPool
    output_dir: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    node_stats: dict[str, NodeStats] = field(default_factory=dict)
    graph_name: str = ""
    read_folders: tuple[Path, ...] = ()
    """The folders the user allowed the graph to read and keep indexes in (`--allow-read`; see graph_files)."""
    resume_done: Container[str] | None = None
    """On --resume, the ids earlier parts settled (kept on disk: test with `in`)."""
    shared_state: SharedStateProvider = field(default_factory=LocalSharedState)
    """Where `shared_index` objects live: this process, or a Ray actor under `run --ray`."""
    tools: Toolbox = field(default_factory=Toolbox)
    """The graph's `tools:` entries; MCP sessions open in the nodes' setup and close with the run."""
    _shared: dict[str, Shared] = field(default_factory=dict)
    _pools: dict[str, RecordPool] = field(default_factory=dict)
    _indexes: dict[str, SharedIndex] = field(default_factory=dict)

    async def complete(self, node: str, model: str, request: LLMRequest) -> Completion:
        stats = self.stats_for(node)
        step = current_step.get()
        try:
            completion = await self.models.complete(model, request, stats.usage)
        except Exception as error:
            if step is not None:
                step.add_call(model, request, None, error)
            raise
        if step is not None:
            step.add_call(model, request, completion)
        usage = record_usage.get()
        if usage is not None:
            usage.calls += 1
            usage.retries += max(0, completion.attempts - 1)
            usage.tokens += completion.prompt_tokens + completion.completion_tokens
        return completion

    def stats_for(self, node: str) -> NodeStats:
        """The node's counters (made on first use: a subgraph's nodes are named only when it runs)."""
        stats = self.node_stats.get(node)
        if stats is None:
            stats = self.node_stats[node] = NodeStats()
        return stats

    def shared(self, key: str, factory: Callable[[], T]) -> Shared:
        """The run-wide object under `key`, made by `factory` the first time it is asked for."""
        if key not in self._shared:
            self._shared[key] = Shared(factory())
        return self._shared[key]

    async def shared_index(self, key: str, local: Any = None) -> SharedIndex:
        """The run-wide index under `key` (a dedup index): made from `local` the first time (in a node's
        setup), seen by every record of the run, in every shard under `--ray`."""
        if local is None and key not in self._indexes:
            raise RuntimeError(f"the shared index '{key}' is made in setup(), which has not run")
        if key not in self._indexes:
            self._indexes[key] = await self.shared_state.index(key, local)
        return self._indexes[key]

    def has_shared_index(self, key: str) -> bool:
        return key in self._indexes

    def record_pool(self, name: str, max_size: int = 100_000) -> RecordPool:
        """The run-wide record pool `name`, persisted under <output dir>/pools/ and restored on --resume."""
        if name not in self._pools:
            path = path_in_run(self.output_dir, POOL_DIR, name) if self.output_dir else None
            self._pools[name] = RecordPool(name, max_size, path, self.resume_done)
        return self._pools[name]

    def close_pools(self) -> None:
        for pool in self._pools.values():
            pool.close()

    def resolve_path(self, path: str) -> Path:
        """Paths in a graph file are relative to the graph file."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def read_file(self, path: str, key: str, what: str = "") -> tuple[Path, str]:
        """A file the graph names (a sampler file, a few-shot pool, a preload) and its text, through the one
        reader (graph_files): beside the graph or in a folder the user allowed, a regular file, capped.
        `what` starts each refusal ("slot file ")."""
        resolved = self.resolve_path(path)
        return resolved, read_graph_text(resolved, self.base_dir, key, what=what, granted=self.read_folders)

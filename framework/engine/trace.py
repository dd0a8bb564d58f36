"""What one record did, node step by node step: the request each model call rendered, its reply, the
node's output, the edges it took and why. One collector serves `synthloom preview` (shown on screen) and
`run --trace` (appended to traces.jsonl when the record settles).

The scheduler (or preview) sets `record_trace` for a record's task; asyncio copies it into the tasks the
record starts. `GraphWalk` opens a step per node run and sets `current_step` (graph/context.py), so
`RunContext.complete` adds each model call to the step that made it, even from a nested subgraph or a parallel branch.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..models.base import Completion, LLMRequest
from ..store.journal import TRACES as TRACES  # re-exported: the run's files are named in journal.py

if TYPE_CHECKING:
    from ..graph.node import Drop, Node
    from ..graph.runnable import Edge


@dataclass
class StepTrace:
    """One run of one node for one record."""

    node: str
    type: str
    reads: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    calls: list[dict[str, Any]] = field(default_factory=list)
    output: dict[str, Any] | None = None
    drop: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    edges: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def add_tool_call(self, round_number: int, tool: str, arguments: Any, result: str, ok: bool,
                      seconds: float) -> None:
        """One tool call of a tool loop round, with what it gave back (an error's text when not `ok`)."""
        self.tool_calls.append({"round": round_number, "tool": tool, "arguments": arguments, "ok": ok,
                                "result": result, "latency_s": round(seconds, 4)})

    def add_call(self, model: str, request: LLMRequest, completion: Completion | None,
                 error: BaseException | None = None) -> None:
        call: dict[str, Any] = {"model": model}
        if request.messages is not None:
            call["messages"] = [dict(message) for message in request.messages]
        if request.prompt is not None:
            call["prompt"] = request.prompt
        if request.params:
            call["params"] = dict(request.params)
        if request.tools is not None:
            call["tools"] = [tool["function"]["name"] for tool in request.tools]
            call["tool_choice"] = request.tool_choice
        if completion is not None and completion.tool_calls:
            call["tool_calls"] = completion.tool_calls
        if completion is not None:
            call.update(reply=completion.text, finish_reason=completion.finish_reason,
                        prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                        latency_s=round(completion.latency, 4), attempts=completion.attempts,
                        cached=completion.cached)
        if error is not None:
            call.update(error=f"{type(error).__name__}: {error}", attempts=getattr(error, "attempts", 1))
        self.calls.append(call)

    def finish(self, result: dict[str, Any] | Drop | None) -> None:
        self.seconds = time.perf_counter() - self.started
        if isinstance(result, dict):
            self.output = result
        elif result is not None:
            self.drop = {"reason": result.reason, **({"detail": result.detail} if result.detail else {})}

    def fail(self, error: BaseException) -> None:
        self.seconds = time.perf_counter() - self.started
        self.error = f"{type(error).__name__}: {error}"

    def add_edge(self, edge: Edge, value: bool | None, taken: bool, why: str) -> None:
        self.edges.append({"to": edge.target, "when": edge.when.source if edge.when else None, "value": value,
                           "max_visits": edge.max_visits, "taken": taken, "why": why})

    def as_dict(self) -> dict[str, Any]:
        tokens = sum(call.get("prompt_tokens", 0) + call.get("completion_tokens", 0) for call in self.calls)
        return {"node": self.node, "type": self.type, "reads": self.reads, "calls": self.calls,
                "output": self.output, "drop": self.drop, "error": self.error,
                "latency_s": round(self.seconds, 4), "tokens": tokens,
                "attempts": sum(call.get("attempts", 1) for call in self.calls), "edges": self.edges,
                **({"tool_calls": self.tool_calls} if self.tool_calls else {})}


@dataclass
class RecordTrace:
    """Every step of one record, in the order the steps started."""

    record_id: str
    steps: list[StepTrace] = field(default_factory=list)

    def begin(self, node: Node[Any], node_type: str, state: Mapping[str, Any]) -> StepTrace:
        reads = {key: state[key] for key in sorted(node.reads()) if key in state}
        step = StepTrace(node.name, node_type, reads)
        self.steps.append(step)
        return step

    def last_step(self, node: str) -> StepTrace | None:
        return next((step for step in reversed(self.steps) if step.node == node), None)

    def lines(self) -> list[dict[str, Any]]:
        """traces.jsonl rows: one per step, each with the record id and the step's place in the walk."""
        return [{"id": self.record_id, "step": index, **step.as_dict()} for index, step in enumerate(self.steps)]


record_trace: ContextVar[RecordTrace | None] = ContextVar("record_trace", default=None)

"""How `synthloom preview` shows its records: rich panels in a terminal, the same lines as plain text
when stdout is not a TTY. Text from records is never read as rich markup."""
from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

SHOWN_CHARS = 2000   # longer texts are cut on screen (--json has them whole)


def step_title(step: dict[str, Any]) -> str:
    return (f"{step['node']} ({step['type']})  {step['latency_s']:.2f}s · {step['tokens']} tokens · "
            f"{len(step['calls'])} calls · {step['attempts']} attempts")


def step_lines(step: dict[str, Any]) -> list[str]:
    """What a step did, top to bottom: the requests and replies, its output, the edges it took and why."""
    lines: list[str] = []
    for call in step["calls"]:
        lines.append(f"model {call['model']}" + (f" params {_json(call['params'])}" if call.get("params") else ""))
        for message in call.get("messages", []):
            lines.append(_indent(f"{message.get('role')}: {_cut(str(message.get('content', '')))}"))
        if "prompt" in call:
            lines.append(_indent(f"prompt: {_cut(call['prompt'])}"))
        if "error" in call:
            lines.append(f"  error: {call['error']}")
        else:
            lines.append(_indent(f"reply: {_cut(call['reply'])}"))
            lines.append(f"  ({call['prompt_tokens']} + {call['completion_tokens']} tokens, "
                         f"{call['latency_s']:.2f}s, {call['attempts']} attempts"
                         f"{', cached' if call['cached'] else ''}, finish {call['finish_reason']})")
    if not step["calls"] and step["reads"]:
        lines.append("reads " + _cut(_json(step["reads"])))
    if step["output"] is not None:
        for key, value in step["output"].items():
            lines.append(_indent(f"-> {key} = {_cut(value if isinstance(value, str) else _json(value))}"))
    if step["drop"] is not None:
        lines.append(f"DROP: {step['drop']['reason']}" + (f" {_json(step['drop']['detail'])}"
                                                          if step["drop"].get("detail") else ""))
    if step["error"] is not None:
        lines.append(f"FAILED: {step['error']}")
    for edge in step["edges"]:
        line = f"edge -> {edge['to']}: {'taken' if edge['taken'] else 'not taken'}"
        if edge["value"] is None:  # unconditional, or its max_visits used up before the condition was asked
            line += f" ({edge['why']})"
        else:
            line += f", when `{edge['when']}` is {edge['value']}"
            line += f" (max_visits {edge['max_visits']})" if edge["max_visits"] else ""
        lines.append(line)
    return lines


def record_heading(record: dict[str, Any], index: int, total: int) -> str:
    outcome = record["outcome"]
    if outcome == "dropped":
        outcome += f" at {record['node']}: {record['reason']}"
    elif outcome == "failed":
        outcome += f" at {record['node']}: {record['error']}"
    return f"record {index}/{total}  id {record['id']}  -> {outcome}"


def output_lines(record: dict[str, Any]) -> list[str]:
    lines = []
    for name, rows in record["outputs"].items():
        if not rows:
            lines.append(f"{name}.jsonl: nothing (the output's `when` does not hold)")
        for row in rows:
            lines.append(f"{name}.jsonl: {_cut(_json(row))}")
    return lines


def render_plain(records: list[dict[str, Any]], show_outputs: bool = True) -> str:
    parts: list[str] = []
    for index, record in enumerate(records, start=1):
        parts.append(f"=== {record_heading(record, index, len(records))} ===")
        for step in record["steps"]:
            parts.append(f"[{step_title(step)}]")
            parts.extend(_indent(line) for line in step_lines(step))
        if show_outputs and record["outputs"]:
            parts.append("would write:")
            parts.extend(_indent(line) for line in output_lines(record))
        parts.append("")
    return "\n".join(parts)


def render_rich(records: list[dict[str, Any]], console: Console, show_outputs: bool = True) -> None:
    for index, record in enumerate(records, start=1):
        console.print(Rule(Text(record_heading(record, index, len(records)), style="bold")))
        for step in record["steps"]:
            style = "red" if step["error"] else "yellow" if step["drop"] else "cyan"
            body = Text("\n".join(step_lines(step)) or "(no output)")
            console.print(Panel(body, title=Text(step_title(step)), title_align="left", border_style=style))
        if show_outputs and record["outputs"]:
            console.print(Panel(Group(*(Text(line) for line in output_lines(record))),
                                title=Text("would write"), title_align="left", border_style="green"))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text):,} chars)"


def _indent(text: str) -> str:
    return "  " + text.replace("\n", "\n    ")

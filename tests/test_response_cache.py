"""The response cache is one SQLite file that several processes open at once (Ray shards, two runs on one
machine). CI once lost a Ray shard to "duplicate column name: tool_calls": two shards found a fresh cache
without the column and both added it. Its test then found the next race: a process opening a new cache while
another switched it to write-ahead logging was told "database is locked" (SQLite does not wait there)."""
from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from synthloom.models.base import Completion, LLMRequest
from synthloom.models.cache import ResponseCache, cache_key

OLD_SCHEMA = ("CREATE TABLE responses (key TEXT PRIMARY KEY, text TEXT, prompt_tokens INTEGER, "
              "completion_tokens INTEGER, finish_reason TEXT, created REAL)")


def open_together(folder: str, start: Any) -> None:
    start.wait()
    ResponseCache(Path(folder)).close()


def open_in_processes(folder: Path, count: int) -> list[int | None]:
    context = multiprocessing.get_context("spawn")  # a clean interpreter each, as a Ray worker is
    start = context.Barrier(count)
    workers = [context.Process(target=open_together, args=(str(folder), start)) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return [worker.exitcode for worker in workers]


@pytest.mark.parametrize("made_before_tool_calls", [False, True])
def test_processes_opening_one_cache_at_once_all_open_it(tmp_path: Path, made_before_tool_calls: bool) -> None:
    if made_before_tool_calls:
        with sqlite3.connect(tmp_path / "responses.sqlite") as old:
            old.execute(OLD_SCHEMA)
            old.execute("INSERT INTO responses VALUES ('k', 'an old answer', 1, 2, 'stop', 0)")
    for _ in range(3):  # the race is a matter of timing: try it more than once
        assert open_in_processes(tmp_path, 6) == [0] * 6
    with sqlite3.connect(tmp_path / "responses.sqlite") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(responses)")]
        rows = db.execute("SELECT text, tool_calls FROM responses").fetchall()
    assert columns.count("tool_calls") == 1
    assert rows == ([("an old answer", None)] if made_before_tool_calls else [])


def test_a_cache_made_before_tool_calls_keeps_its_answers_and_stores_tool_calls(tmp_path: Path) -> None:
    request = LLMRequest(messages=({"role": "user", "content": "hi"},))
    key = cache_key({"backend": "openai", "model": "m"}, request)
    with sqlite3.connect(tmp_path / "responses.sqlite") as old:
        old.execute(OLD_SCHEMA)
        old.execute("INSERT INTO responses VALUES (?, 'an old answer', 1, 2, 'stop', 0)", (key,))
    cache = ResponseCache(tmp_path)
    found = cache.get(key)
    assert found is not None and found.text == "an old answer" and found.tool_calls is None
    calls = [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}]
    cache.put("other", Completion(text="", prompt_tokens=1, completion_tokens=1, finish_reason="tool_calls",
                                  tool_calls=calls))
    cache.close()
    again = ResponseCache(tmp_path).get("other")
    assert again is not None and again.tool_calls == calls

"""Record pools (`ctx.record_pool`): run-wide, persisted under <output dir>/pools/, restored on --resume
without the items of records that had not finished. The old names still work for one release."""
from __future__ import annotations

import json
from pathlib import Path

from synthloom.graph.context import RunContext
from synthloom.graph.record_pool import POOL_DIR
from synthloom.models.clients import ModelPool


def test_a_record_pool_is_run_wide_persisted_and_resumed_without_unfinished_records(tmp_path: Path) -> None:
    ctx = RunContext(ModelPool({}), output_dir=tmp_path)
    pool = ctx.record_pool("tasks", max_size=10)
    assert ctx.record_pool("tasks") is pool and ctx.record_pool("other") is not pool
    pool.add("r1", {"text": "kept"})
    pool.add("r2", {"text": "unfinished"})
    ctx.close_pools()
    written = [json.loads(line) for line in (tmp_path / POOL_DIR / "tasks.jsonl").read_text().splitlines()]
    assert [item["record"] for item in written] == ["r1", "r2"]

    resumed = RunContext(ModelPool({}), output_dir=tmp_path, resume_done={"r1"}).record_pool("tasks", max_size=10)
    assert [item["text"] for item in resumed.items] == ["kept"]

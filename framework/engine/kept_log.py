"""What a node kept for a record, one JSON line each beside the run's output (`pools/<node kind>-<node>.jsonl`),
flushed as it is kept, so `--resume` after a kill -9 can put it back: `dedup` logs the signatures it kept
(its `index:` folder is only written at the end of a run; signatures, not texts: 40 hex characters for
`exact`, num_perm * 4 bytes (base64) for `minhash`, a vector for `embedding`), and a `cover` sampler the
positions its records took.

On resume only lines of records the journal lists as done are replayed (the others run again and must not
meet themselves), and the file is rewritten to those lines, streaming, so memory does not grow with it.
Dedup lines of the older format (`{"record", "text"}`) are replayed by signing their text.
"""
from __future__ import annotations

import json
import os
from collections.abc import Container, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..graph.record_pool import POOL_DIR
from ..sandbox.run_paths import path_in_run

if TYPE_CHECKING:
    from ..graph.context import RunContext


class KeptLog:
    def __init__(self, path: Path | None, resume_done: Container[str] | None):
        self.path = path
        self.resume_done = resume_done
        self._handle: IO[str] | None = None

    def replay(self) -> Iterator[dict[str, Any]]:
        """On resume: the entries of finished records (and the file cut down to them); else nothing."""
        if self.path is None or self.resume_done is None or not self.path.exists():
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        with self.path.open(encoding="utf-8") as lines, temporary.open("w", encoding="utf-8") as kept:
            for line in lines:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # cut by a kill mid-write
                if entry.get("record") in self.resume_done:
                    kept.write(line if line.endswith("\n") else line + "\n")
                    yield entry
        os.replace(temporary, self.path)

    def append(self, record_id: str, signature: str) -> None:
        """Call under the index's lock, right after the index kept the signature."""
        if self.path is None:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a" if self.resume_done is not None else "w", encoding="utf-8")
        self._handle.write(json.dumps({"record": record_id, "signature": signature}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def kept_log(ctx: RunContext, name: str) -> KeptLog:
    """The run's log `pools/<name>.jsonl`, one object per run whichever record asks first (no file without
    an output directory: a preview)."""
    def open_log() -> KeptLog:
        path = path_in_run(ctx.output_dir, POOL_DIR, name) if ctx.output_dir else None
        return KeptLog(path, ctx.resume_done)
    log: KeptLog = ctx.shared(f"kept-log:{name}", open_log).value
    return log

"""When a run may start or go on in a directory: the rules both run paths apply, written once.

A one-process run (`Runner.run`, and each `run --ray` shard in `shards/<k>/`) marks its directory with
journal.jsonl; a `run --ray` driver marks the run directory with ray.json. Either refuses a directory that
holds the other kind of run, a run without `--resume`, a run of a changed graph, and any file it would
write over (a stray) when it holds no run; `--overwrite` deletes what either kind leaves. Only the marker
and the words for it differ between the two ("run journal" or "run plan (ray.json)").
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..graph.record_pool import POOL_DIR
from .journal import JOURNAL, OWN_FILES, SET_ASIDE, present
from .shard_merge import PLAN, SHARDS_DIR


def clear(directory: Path, data_files: list[str]) -> None:
    """`--overwrite`: delete what a run of either kind leaves (its data files, journal or plan, shards,
    manifest, card, ledger, pools), and nothing else."""
    for name in [*data_files, JOURNAL, PLAN, *OWN_FILES, SET_ASIDE]:
        if name != POOL_DIR:
            (directory / name).unlink(missing_ok=True)
    for folder in (POOL_DIR, SHARDS_DIR):
        shutil.rmtree(directory / folder, ignore_errors=True)


def admit(directory: Path, data_files: list[str], *, resume: bool, overwrite: bool, ray: bool) -> bool:
    """Apply `--overwrite`, then refuse what the run may not start or go on over; True: the directory
    holds a run of this kind to resume. Call it holding the directory's lock."""
    if overwrite:
        clear(directory, data_files)
    other = directory / (JOURNAL if ray else PLAN)
    if other.exists():
        kind = "without" if ray else "with"
        raise ConfigError(f"{directory} holds a run made {kind} --ray; finish it {kind} --ray, or choose another "
                          f"output directory")
    if _holds_a_run(directory, ray=ray):
        if not resume:
            raise ConfigError(f"{directory} already holds a run; add --resume to finish it, --overwrite to start "
                              f"again, or choose another output directory")
        return True
    # before the ledger opens or the plan is written: either replaces a file of that name
    strays = [name for name in [*data_files, *OWN_FILES, SHARDS_DIR] if present(directory / name)]
    if strays:
        missing = f"run plan ({PLAN})" if ray else "run journal"
        raise ConfigError(f"{directory} holds {', '.join(strays)} but no {missing}; move them away, choose another "
                          f"output directory, or add --overwrite to delete them")
    return False


def refuse_a_changed_graph(directory: Path, config_hash: str, *, ray: bool) -> None:
    """A resumed run must be the run that started: the hash its plan or first journal header recorded.
    (Every later part's header repeats it, since a part with another hash is refused here.)"""
    recorded = _recorded_hash(directory, ray=ray)
    if recorded is not None and recorded != config_hash:
        raise ConfigError(f"the graph changed since the run in {directory} started (its prompts, nodes, edges, "
                          f"outputs, models or seed); finish it with the same graph, or use a new output directory")


def _holds_a_run(directory: Path, *, ray: bool) -> bool:
    if ray:
        return (directory / PLAN).exists()
    journal = directory / JOURNAL
    return journal.exists() and journal.stat().st_size > 0


def _recorded_hash(directory: Path, *, ray: bool) -> str | None:
    try:
        with (directory / (PLAN if ray else JOURNAL)).open(encoding="utf-8", errors="replace") as handle:
            first = json.loads(handle.read() if ray else handle.readline())
    except (OSError, ValueError):
        return None  # no run yet, or a first line cut by a kill: nothing recorded to hold the run to
    recorded = first.get("config_hash") if isinstance(first, dict) else None
    return None if recorded is None else str(recorded)

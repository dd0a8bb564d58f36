"""`synthloom push`: upload a finished run directory to the Hugging Face Hub as a dataset repository.

What goes up is what a dataset user needs: each output's jsonl, the card (README.md) and manifest.json.
The journal, the lock file, pools/ and traces stay home (bookkeeping for `--resume`); failed.jsonl and
dropped.jsonl go up only with `all_files` (they hold seed rows and raw states a user may not mean to share).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ConfigError
from ..store.journal import CARD, DROPPED, FAILED, MANIFEST
from .card import build_card


def files_to_push(output_dir: str | Path, all_files: bool = False) -> list[str]:
    """The file names (relative to the run directory) a push uploads, sorted. Raises `ConfigError` when the
    directory holds no finished run to share, or when a file to upload is a link or not a regular file (a
    crafted run directory must not upload what lies outside it)."""
    directory = Path(output_dir)
    _regular_or_absent(directory, MANIFEST)
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"{directory} has no readable {MANIFEST}; push a run's output directory") from None
    outputs = (manifest.get("counts") or {}).get("outputs") or {} if isinstance(manifest, dict) else {}
    names = [f"{name}.jsonl" for name in outputs if isinstance(name, str) and Path(name).name == name]
    names += [FAILED, DROPPED] if all_files else []
    present = [name for name in names if _regular_or_absent(directory, name)]
    _regular_or_absent(directory, CARD)  # written by the push when absent
    return sorted({*present, CARD, MANIFEST})


def _regular_or_absent(directory: Path, name: str) -> bool:
    """True for a regular file, False when there is none; a link or anything else is refused."""
    try:
        mode = os.lstat(directory / name).st_mode
    except FileNotFoundError:
        return False
    except OSError as error:
        raise ConfigError(f"cannot read {directory / name}: {error.strerror or error}") from None
    if stat.S_ISLNK(mode):
        raise ConfigError(f"{directory / name} is a symbolic link; push uploads only regular files inside the "
                          f"run directory: put the file itself there, or remove the link")
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{directory / name} is not a regular file; push uploads only regular files inside "
                          f"the run directory: remove it")
    return True


def _open_regular(path: Path) -> BinaryIO:
    """Open without following a link (one put there after `files_to_push` looked is refused too)."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise ConfigError(f"cannot open {path} for upload: {error.strerror or error}; push uploads only "
                          f"regular files inside the run directory") from None
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        raise ConfigError(f"{path} is not a regular file; push uploads only regular files inside the run "
                          f"directory: remove it")
    os.set_blocking(handle, True)
    return os.fdopen(handle, "rb")


def hub_url(repo_id: str) -> str:
    """Where the dataset lives: on `HF_ENDPOINT` (a mirror or a private Hub) when set, else huggingface.co."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return f"{endpoint.rstrip('/')}/datasets/{repo_id}"


def stage_reviewed(output_dir: str | Path, into: Path, all_files: bool = False) -> Path:
    """Write into `into` what a `--reviewed` push uploads: each output with only its accepted records (edits
    applied), the manifest with those counts and the review's, and a card saying so. The run directory is
    left as it is; records are streamed, so memory stays flat."""
    from ..store.reviews import review_counts, write_reviewed
    from .card import card_text, graph_file_inside, run_graph
    directory = Path(output_dir)
    files = files_to_push(directory, all_files)  # refuses what a plain push refuses (links, no manifest)
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    counts = dict(manifest.get("counts") or {})
    before = dict(counts.get("outputs") or {})
    counts["outputs"] = {name: write_reviewed(directory, name, into / f"{name}.jsonl") for name in before
                         if isinstance(name, str) and Path(name).name == name}
    counts["written"] = sum(counts["outputs"].values())
    staged = {**manifest, "counts": counts, "reviews": review_counts(directory), "written_before_review": before}
    (into / MANIFEST).write_text(json.dumps(staged, indent=2, ensure_ascii=False), encoding="utf-8")
    for name in files:
        if name in (FAILED, DROPPED):
            with _open_regular(directory / name) as source, (into / name).open("wb") as target:
                shutil.copyfileobj(source, target)
    text = card_text(into, staged, run_graph(manifest), graph_file_inside(directory, manifest))
    (into / CARD).write_text(text, encoding="utf-8")
    return into


def plan_push(output_dir: str | Path, all_files: bool = False, reviewed: bool = False) -> tuple[list[str], str]:
    """`push --dry-run`: the files a push would upload and the card it would upload with them, with no
    network and no Hub library (the card is written first if the run has none, as `push` does)."""
    directory = Path(output_dir)
    if reviewed:
        with tempfile.TemporaryDirectory() as folder:
            staged = stage_reviewed(directory, Path(folder), all_files)
            return files_to_push(staged, all_files), (staged / CARD).read_text(encoding="utf-8")
    files = files_to_push(directory, all_files)
    card = directory / CARD if (directory / CARD).is_file() else build_card(directory)
    return files, card.read_text(encoding="utf-8")


def push(output_dir: str | Path, repo_id: str, *, private: bool = False, all_files: bool = False,
         token: str | None = None, reviewed: bool = False) -> Any:
    """Write the card if the run has none, create the dataset repo if needed, and upload exactly
    `files_to_push` in one commit. The token comes from `token`, `HF_TOKEN` or `hf auth login`; the Hub
    from `HF_ENDPOINT` (default huggingface.co). Returns the Hub's commit info. `reviewed=True`: only the
    records accepted in `synthloom studio`, edits applied (see `stage_reviewed`)."""
    if reviewed:
        with tempfile.TemporaryDirectory() as folder:
            staged = stage_reviewed(output_dir, Path(folder), all_files)
            return push(staged, repo_id, private=private, all_files=all_files, token=token)
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
    except ImportError:
        raise ConfigError("push needs huggingface_hub: pip install 'synthloom[hub]'") from None
    directory = Path(output_dir)
    files = files_to_push(directory, all_files)
    if not (directory / CARD).is_file():
        build_card(directory)
    with ExitStack() as opened:
        operations = [CommitOperationAdd(path_in_repo=name,
                                         path_or_fileobj=opened.enter_context(_open_regular(directory / name)))
                      for name in files]
        hub = HfApi(token=token)
        hub.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)  # None: default
        return hub.create_commit(repo_id, operations, repo_type="dataset",
                                 commit_message=f"synthloom run {directory.resolve().name}")

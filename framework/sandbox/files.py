"""One reader for every file a graph names: seed files, sampler `file:` values, few-shot `pool:` files,
novelty `preload:` files, subgraph `graph:` files and dedup `index:` files.

A graph may come from a stranger, so a path it writes is opened only when
- it is not under /proc, /dev or /sys (`/proc/self/environ` holds your API keys, `/dev/zero` never ends);
- besides the seed, it lies inside the graph file's folder (symlinks followed), or inside a folder you
  allowed with `--allow-read DIR` / `allow_read=[...]` or `SYNTHLOOM_ALLOW_READ=dir1:dir2` (the seed path is
  yours to point anywhere);
- it is a regular file: checked on the opened descriptor, opened with O_NONBLOCK so a FIFO never blocks;
- read whole, it is at most `MAX_FILE_BYTES`; read line by line (`capped_lines`), a line is at most
  `MAX_LINE_BYTES`, so a file without newlines is never held whole.
Each refusal is a `ConfigError` naming the key and how to allow the file.

A folder the graph keeps files in across runs (a dedup `index:`, read and written) must lie inside a folder
you allowed, the same consent (`allowed_write_folder`): the graph's own folder is not enough, as a graph
placed in your home folder would otherwise write wherever it names there.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError

MAX_FILE_BYTES = 64_000_000
"""A file read whole (a json seed, a sampler or few-shot file, a preload, a subgraph)."""
MAX_LINE_BYTES = 10_000_000
"""One line of a file read line by line (a jsonl or csv seed)."""
ALLOW_READ_ENV = "SYNTHLOOM_ALLOW_READ"
"""Folders (separated by ':') a graph may read files from besides its own folder, and keep indexes in."""
ALLOW_READ_FLAG = "--allow-read"
SYSTEM_FOLDERS = (Path("/proc"), Path("/dev"), Path("/sys"))


def read_folders_from_environment() -> tuple[Path, ...]:
    """The folders the user allowed in `SYNTHLOOM_ALLOW_READ`."""
    return tuple(Path(part).expanduser().resolve()
                 for part in os.environ.get(ALLOW_READ_ENV, "").split(os.pathsep) if part.strip())


def resolved_folders(folders: Iterable[str | Path]) -> tuple[Path, ...]:
    """The folders given with `--allow-read` / `allow_read=`, made absolute (a shard may start elsewhere)."""
    return tuple(Path(folder).expanduser().resolve() for folder in folders)


def allowed_folders(granted: Iterable[Path] = ()) -> list[Path]:
    """The folders the user allowed: `granted` (`--allow-read`, carried by the graph) and the environment's."""
    return [*resolved_folders(granted), *read_folders_from_environment()]


def _how_to_allow(folder: Path) -> str:
    return f"{ALLOW_READ_FLAG} {folder} (or {ALLOW_READ_ENV}={folder})"


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _outside_system_folders(path: Path, key: str, what: str) -> Path:
    resolved = path.expanduser().resolve()
    for system in SYSTEM_FOLDERS:
        if _under(resolved, system):
            raise ConfigError(f"{what}{path} is under {system}, which a graph may not read; give a file of yours",
                              key=key)
    return resolved


def checked_path(path: Path, base_dir: Path, key: str, *, anywhere: bool = False, what: str = "",
                 granted: Iterable[Path] = ()) -> Path:
    """`path` resolved, if a graph may read it (see the module's docstring); `ConfigError` naming `key` if not.
    `anywhere`: the user's own choice of file (the seed), refused only under /proc, /dev and /sys.
    `granted`: the folders the user allowed for this graph (`--allow-read`), besides the environment's."""
    resolved = _outside_system_folders(path, key, what)
    if anywhere or _under(resolved, base_dir.resolve()) or any(_under(resolved, folder)
                                                               for folder in allowed_folders(granted)):
        return resolved
    raise ConfigError(f"{what}{path} is outside the graph's folder {base_dir}; a graph reads files beside it only, "
                      f"unless you allow the folder: {_how_to_allow(resolved.parent)}", key=key)


def allowed_write_folder(path: Path, key: str, granted: Iterable[Path] = (), what: str = "") -> Path:
    """`path` resolved, if it lies inside a folder the user allowed (see the module's docstring): a folder a
    graph reads and writes across runs (a dedup `index:`). `ConfigError` naming `key` and the flag if not."""
    resolved = _outside_system_folders(path, key, what)
    if any(_under(resolved, folder) for folder in allowed_folders(granted)):
        return resolved
    raise ConfigError(f"{what}{path} is outside the folders you allowed; a graph keeps files across runs only in "
                      f"a folder you allow: {_how_to_allow(resolved)}", key=key)


@contextmanager
def open_graph_file(path: Path, base_dir: Path, key: str, *, anywhere: bool = False,
                    what: str = "", granted: Iterable[Path] = ()) -> Iterator[BinaryIO]:
    """The file opened for reading in binary, once it is known to be an allowed regular file. `what` starts
    each message ("seed file ")."""
    resolved = checked_path(path, base_dir, key, anywhere=anywhere, what=what, granted=granted)
    try:
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{what}{path} does not exist; fix {key} (relative to the graph file)", key=key) \
            from None
    except OSError as error:
        raise ConfigError(f"cannot read {what}{path} ({error.strerror}); give a readable regular file",
                          key=key) from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else \
            "a device or socket, not a regular file"
        raise ConfigError(f"{what}{path} is {kind}; give a regular file", key=key)
    os.set_blocking(descriptor, True)
    with os.fdopen(descriptor, "rb") as handle:
        yield handle


def read_graph_bytes(path: Path, base_dir: Path, key: str, *, anywhere: bool = False,
                     limit: int = MAX_FILE_BYTES, what: str = "", granted: Iterable[Path] = ()) -> bytes:
    """The whole file, refused past `limit` bytes (read at most one byte past it to know)."""
    with open_graph_file(path, base_dir, key, anywhere=anywhere, what=what, granted=granted) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{what}{path} is larger than {limit // 1_000_000} MB, the most a graph's file is read "
                          f"whole; make it smaller (or a jsonl file, read line by line)", key=key)
    return data


def read_graph_text(path: Path, base_dir: Path, key: str, *, anywhere: bool = False,
                    limit: int = MAX_FILE_BYTES, what: str = "", granted: Iterable[Path] = ()) -> str:
    data = read_graph_bytes(path, base_dir, key, anywhere=anywhere, limit=limit, what=what, granted=granted)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line} is not UTF-8 text (byte {error.start}); save it as UTF-8", key=key) \
            from None


class LineTooLong(Exception):
    """A line past MAX_LINE_BYTES: the rest of the file is not read."""


def capped_lines(handle: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The file's lines, each read with a cap: a file without newlines is never held whole."""
    while True:
        raw = handle.readline(limit + 1)
        if not raw:
            return
        if len(raw) > limit and not raw.endswith(b"\n"):
            raise LineTooLong(f"a line longer than {limit} bytes; the rest of the file is not read")
        yield raw

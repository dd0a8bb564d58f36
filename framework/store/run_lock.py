"""One run per output directory at a time, and the directory it holds watched.

An exclusive `flock` on `<dir>/.synthloom.lock` is held for the whole run. The OS releases it when the
process dies, so a kill -9 never leaves a stale lock behind; a second run into the same directory is
refused at once, naming the process that holds it. The lock also remembers which directory it locked
(device and inode): `directory_problem` says when that directory vanished, was replaced by another folder
of the same name, or became read-only, since open files would go on writing into an unlinked or moved
directory and the run would report records that are not there.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from ..errors import ConfigError, OutputWriteError
from .journal import LOCK


class RunLock:
    def __init__(self, directory: Path):
        self.path = directory / LOCK
        self._handle: int | None = None
        self._identity: tuple[int, int] | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputWriteError(f"cannot use {self.path.parent} as the output directory: "
                                   f"{error.strerror or error}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(handle, 300, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(handle)
            raise ConfigError(f"{self.path.parent} is in use by another run ({holder}); wait for it to end "
                              f"or choose another output directory") from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        try:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, only the note of who holds it is missing
        self._handle = handle
        found = os.stat(self.path.parent)
        self._identity = (found.st_dev, found.st_ino)

    def directory_problem(self) -> str | None:
        """Why the locked directory can no longer take the run's files; None while it is the one locked and
        writable."""
        if self._identity is None:
            return None
        directory = self.path.parent
        try:
            found = os.stat(directory)
        except FileNotFoundError:
            return f"the output directory {directory} vanished"
        except OSError as error:
            return f"the output directory {directory} cannot be reached ({error.strerror or error})"
        if (found.st_dev, found.st_ino) != self._identity:
            return f"the output directory {directory} was replaced by another folder"
        if not os.access(directory, os.W_OK):
            return f"the output directory {directory} became read-only"
        return None

    def directory_is_ours(self) -> bool:
        """The path still names the directory the run locked (so writing a manifest there is right)."""
        problem = self.directory_problem()
        return problem is None or problem.endswith("read-only")

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing the descriptor drops the flock
            self._handle = None
            self._identity = None

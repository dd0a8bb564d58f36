"""One run per output directory at a time.

An exclusive `flock` on `<dir>/.synthloom.lock` is held for the whole run. The OS releases it when the
process dies, so a kill -9 never leaves a stale lock behind; a second run into the same directory is
refused at once, naming the process that holds it.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from .errors import ConfigError, OutputWriteError
from .journal import LOCK


class RunLock:
    def __init__(self, directory: Path):
        self.path = directory / LOCK
        self._handle: int | None = None

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

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing the descriptor drops the flock
            self._handle = None

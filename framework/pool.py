"""Deprecated name of `synthloom.record_pool` (run-wide record pools), kept importable for one release.

The module was renamed so that it no longer reads like `synthloom.models.pool`, the model pool."""
from __future__ import annotations

import warnings

from .record_pool import POOL_DIR, RecordPool

__all__ = ["POOL_DIR", "RecordPool"]

warnings.warn("synthloom.pool is now synthloom.record_pool", DeprecationWarning, stacklevel=2)

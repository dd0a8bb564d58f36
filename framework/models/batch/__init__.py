"""Provider Batch APIs (`models.<name>.batch`): half the price, hours of latency, exactly once across restarts.

`api.py` speaks the wire, `collector.py` gathers calls into batches and follows them, `ledger.py` writes
each submission down in the run directory before it counts, `client.py` is the model client `pool.py` picks.
"""
from .client import BatchClient
from .ledger import BATCHES, SQLITE_JOURNAL

__all__ = ["BATCHES", "SQLITE_JOURNAL", "BatchClient"]

"""Provider Batch APIs (`models.<name>.batch`): half the price, hours of latency, exactly once across restarts.

`api.py` speaks the wire, `collector.py` gathers calls into batches and follows them, `ledger.py` writes
each submission down in the run directory before it counts, `client.py` is the model client `pool.py`
picks, `rounds.py` counts the batch rounds a graph needs (for `validate`). Nothing is imported here, so
`validate` and the journal reach `rounds` and `ledger` without the HTTP stack.
"""

"""Provider Batch APIs (`models.<name>.batch`): half the price, hours of latency, exactly once across restarts.

`api.py` speaks the wire, `collector.py` gathers calls into batches and follows them, `ledger.py` writes
each submission down in the run directory before it counts, `client.py` is the model client `clients.py`
picks (the batch rounds a graph needs, for `validate`, are counted in graph/batch_rounds.py: it walks the
graph, a layer above). Nothing is imported here, so the journal reaches `ledger` without the HTTP stack.
"""

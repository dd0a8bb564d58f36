"""The run directory as a store: journal, id ledger, lock, manifest, shard merge; where resume is decided."""

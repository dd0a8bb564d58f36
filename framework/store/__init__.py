"""The run directory as a store: journal, id ledger, lock, manifest, shard merge, the reviews users write beside
the outputs; where resume is decided."""

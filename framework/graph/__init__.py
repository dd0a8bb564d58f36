"""The plugin API (Node, RunContext and the run-wide services a node is handed: record pools, shared state),
node-type lookup and code trust, and the runnable graph built from a loaded config."""

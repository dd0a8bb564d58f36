"""The plugin API (Node, RunContext and the run-wide services a node is handed: record pools, shared state),
node-type lookup and the resolver of code a graph names (under the sandbox's code-trust policy), and the
runnable graph built from a loaded config."""

"""One process's streaming run: the Runner, the walk of one record through the graph, traces, progress, seeds."""

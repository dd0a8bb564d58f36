"""The graph-file language: the schema, the loader with its source map, spellings, ceilings and the sampling-parameter
vocabulary. Below models/ and graph/: it says what a graph file means, and runs nothing."""

"""Where a run keeps what it and its users write beside the outputs."""

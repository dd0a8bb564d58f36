"""Built-in node types. Each registers through the `synthloom.nodes` entry points, exactly as a
third-party plugin does (see pyproject.toml)."""

"""Ready-made workflows (YAML graphs with their small seed data), runnable by name: `synthloom run NAME`."""

"""Runs on Ray: the driver that plans and starts shards, and the actors that share state and budgets."""

"""Metrics, logs and health: how an operator sees rill."""

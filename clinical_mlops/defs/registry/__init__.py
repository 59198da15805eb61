"""Dagster wiring for the model registry: change control and the promotion gate."""

__all__ = ["assets"]

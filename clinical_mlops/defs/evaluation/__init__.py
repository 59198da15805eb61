"""Dagster wiring for the evaluation stage."""

__all__ = ["assets"]

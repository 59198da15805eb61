"""Dagster wiring for the validation stage."""

__all__ = ["assets"]

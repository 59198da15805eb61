"""Dagster wiring for the features stage."""

__all__ = ["assets"]

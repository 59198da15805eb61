"""Dagster wiring for the training stage."""

__all__ = ["assets"]

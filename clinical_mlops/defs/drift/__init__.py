"""Dagster wiring for drift monitoring."""

__all__ = ["assets"]

"""Dagster wiring for drift monitoring."""

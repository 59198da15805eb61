"""Dagster wiring for the validation stage."""

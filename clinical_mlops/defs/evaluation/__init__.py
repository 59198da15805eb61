"""Dagster wiring for the evaluation stage."""

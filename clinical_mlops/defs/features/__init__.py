"""Dagster wiring for the features stage."""

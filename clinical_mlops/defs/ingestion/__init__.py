"""Dagster wiring for the ingestion stage."""

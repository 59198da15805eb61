"""Dagster wiring for the ingestion stage."""

__all__ = ["assets", "extract_checks"]

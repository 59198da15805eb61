"""Dagster wiring for source contracts (none yet: the contracts are loaded and derived, not yet wired)."""

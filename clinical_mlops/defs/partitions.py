"""Partitions shared across domains."""

import dagster as dg

extract_partitions = dg.DynamicPartitionsDefinition(name="extracts")
"""One partition per extract file landed in the landing zone (key = file name)."""

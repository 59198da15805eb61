"""Partitions and keys per source: each source has its own extracts, partitions and tables."""

from __future__ import annotations

from functools import cache

import dagster as dg

__all__ = ["cohort_code_version", "extract_partitions", "raw_key", "validated_key"]


@cache
def extract_partitions(source: str) -> dg.DynamicPartitionsDefinition:
    """One partition per extract file of ``source`` (key = file name, unique within the source)."""
    return dg.DynamicPartitionsDefinition(name=f"{source}_extracts")


def raw_key(source: str) -> dg.AssetKey:
    """The source's landed extracts, as text: ``raw.<source>``."""
    return dg.AssetKey([source, "raw_extract"])


def validated_key(source: str) -> dg.AssetKey:
    """The source's validated, typed rows: ``staging.<source>``."""
    return dg.AssetKey([source, "validated_extract"])


def cohort_code_version(spec, own: str) -> str:
    """A cohort asset's code version: its own, then its source contract's version (a reviewed change of the
    contract marks every asset built on it stale)."""
    return f"{own}-{spec.contract_sha256[:12]}"

"""Asset checks evaluated per extract: one result per extract partition of the source, never one for all.

A check spec without a ``partitions_def`` keeps only its latest result, so a clean extract B
would hide the failed identifier gate of extract A, for the UI and for
``AutomationCondition.all_deps_blocking_checks_passed()`` alike. With the extract partitions
on the spec (Dagster 1.13: ``AssetCheckSpec(partitions_def=...)``, a preview feature), each
extract keeps its own outcome and downstream automation is gated partition by partition.
"""

from __future__ import annotations

import warnings

import dagster as dg

from clinical_mlops.defs.partitions import extract_partitions

__all__ = ["extract_check_spec"]


def extract_check_spec(name: str, *, asset: dg.AssetKey, source: str, description: str,
                       blocking: bool = False) -> dg.AssetCheckSpec:
    """An asset check spec partitioned by the source's extracts, like the asset it checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are a preview in Dagster 1.13
        return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking,
                                 partitions_def=extract_partitions(source))

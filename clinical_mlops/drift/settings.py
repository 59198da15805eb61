"""Drift's names as plain values (no scipy, pandas or Evidently), for the Definitions to load without them."""

from __future__ import annotations

__all__ = ["DRIFT_CHECK"]

DRIFT_CHECK = "no_dataset_drift"
"""The check of ``[cohort, drift_report]``."""

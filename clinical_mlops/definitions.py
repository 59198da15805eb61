"""Dagster entry point: everything is discovered under ``clinical_mlops/defs``."""

from pathlib import Path

import dagster as dg

from clinical_mlops.core.settings import switch_off_telemetry

__all__ = ["defs"]

switch_off_telemetry()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)

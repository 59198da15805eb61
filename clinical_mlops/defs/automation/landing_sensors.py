"""One landing-zone sensor per source contract (see :func:`.sensors.build_landing_zone_sensor`)."""

from __future__ import annotations

import dagster as dg

from clinical_mlops.defs.automation.sensors import build_landing_zone_sensor
from clinical_mlops.sources.contract import load_all_sources

__all__ = ["defs"]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[build_landing_zone_sensor(source) for source in load_all_sources()])

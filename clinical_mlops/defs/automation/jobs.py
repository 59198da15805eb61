"""Jobs launched by the automation: batch scoring (one run per extract of a source) and daily monitoring."""

from __future__ import annotations

import dagster as dg

from clinical_mlops.defs.jobs import job_name
from clinical_mlops.defs.partitions import extract_partitions
from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.sources.contract import load_all_sources

__all__ = ["defs"]


@dg.definitions
def defs() -> dg.Definitions:
    specs = load_all_cohorts()
    jobs = [dg.define_asset_job(
        job_name("monitoring"), selection=dg.AssetSelection.groups("monitoring"),
        description="Ingest and verify the prediction log, join outcomes, judge performance, fairness and skew.")]
    for source in load_all_sources():
        names = [[s.name] for s in specs if s.source == source]
        cohorts = dg.AssetSelection.key_prefixes(*names) if names else dg.AssetSelection.assets()
        jobs.append(dg.define_asset_job(
            job_name("scoring", source), selection=cohorts & dg.AssetSelection.groups("scoring"),
            partitions_def=extract_partitions(source),
            description=f"Score one extract of {source} with each of its cohorts' champion (partitioned by extract)."))
    return dg.Definitions(jobs=jobs)

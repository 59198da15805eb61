"""Jobs launched by the automation: batch scoring (one run per extract) and daily monitoring."""

import dagster as dg

from clinical_mlops.defs.partitions import extract_partitions

scoring_job = dg.define_asset_job(
    "scoring_job",
    selection=dg.AssetSelection.groups("scoring"),
    partitions_def=extract_partitions,
    description="Score one extract with the current champion, for every cohort (partitioned by extract).",
)

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.groups("monitoring"),
    description="Ingest and verify the prediction log, join outcomes, judge performance, fairness and skew.",
)

"""Jobs: one per stage group, and the whole graph."""

import dagster as dg

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion", "validation"),
    description="Land one extract and validate it (partitioned by extract).",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("features", "training", "evaluation"),
    description="Rebuild features, split, fit and register baseline and candidate, evaluate — every cohort.",
)

"""Jobs: one per stage group, and the whole graph."""

import dagster as dg

from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.defs.partitions import extract_partitions

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion", "validation"),
    partitions_def=extract_partitions,
    description="Land one extract and validate it (partitioned by extract).",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("features", "training", "evaluation"),
    description="Rebuild features, split, fit and register baseline and candidate, evaluate — every cohort.",
)

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("features"),
    description="Rebuild every cohort's features from the validated extracts (no retraining): what drift and "
    "scoring of a newly arrived extract read.",
)

release_job = dg.define_asset_job(
    "release_job",
    selection=dg.AssetSelection.groups("fairness", "registry")
    | dg.AssetSelection.assets(*[dg.AssetKey([spec.name, "model_card"]) for spec in load_all_cohorts()]),
    description="The governance path, in the graph's order: fairness audit, root cause and mitigation, model card, "
    "change control, and the promotion gate (moves the champion alias only when the evidence says so).",
)

drift_job = dg.define_asset_job(
    "drift_job",
    selection=dg.AssetSelection.groups("drift"),
    partitions_def=extract_partitions,
    description="Drift of one extract against the champion's training data, every cohort (partitioned by extract).",
)

"""Jobs: per source, one per stage group (a source's extracts are its own partitions); across
sources, training, features and the governance path for every cohort."""

from __future__ import annotations

import dagster as dg

from clinical_mlops.defs.partitions import extract_partitions, raw_key, validated_key
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.sources.contract import load_all_sources

__all__ = ["ingestion_job", "job_name"]

_MODELLING = ("features", "training", "evaluation")


def job_name(stage: str, source: str | None = None) -> str:
    """``<stage>_job`` across sources, ``<stage>_job_<source>`` for one source."""
    return f"{stage}_job" if source is None else f"{stage}_job_{source}"


def _of(specs: list[CohortSpec], *groups: str) -> dg.AssetSelection:
    cohorts = dg.AssetSelection.key_prefixes(*[[s.name] for s in specs]) if specs else dg.AssetSelection.assets()
    return cohorts & dg.AssetSelection.groups(*groups)


def _release(specs: list[CohortSpec]) -> dg.AssetSelection:
    return _of(specs, "fairness", "registry") | dg.AssetSelection.assets(
        *[dg.AssetKey([s.name, "model_card"]) for s in specs])


_RELEASE = ("The governance path, in the graph's order: fairness audit, root cause and mitigation, model card, "
            "change control, and the promotion gate (moves the champion alias only when the evidence says so)")


def ingestion_job(source: str):
    """``ingestion_job_<source>``: land one extract and validate it (what ``clinical-mlops land`` runs)."""
    # partitioned by extract: Dagster infers it from the two assets (passing partitions_def is deprecated)
    return dg.define_asset_job(job_name("ingestion", source), selection=dg.AssetSelection.assets(
        raw_key(source), validated_key(source)),
        description=f"Land one extract of {source} and validate it against its contract (partitioned by extract).")


def _source_jobs(source: str, specs: list[CohortSpec]) -> list:
    partitions = extract_partitions(source)
    return [
        ingestion_job(source),
        dg.define_asset_job(job_name("training", source), selection=_of(specs, *_MODELLING),
                            description=f"Features, split, baseline and candidate, evaluation — {source}'s cohorts."),
        dg.define_asset_job(job_name("features", source), selection=_of(specs, "features"),
                            description=f"Rebuild {source}'s cohort features from its validated extracts (no retraining)."),
        dg.define_asset_job(job_name("release", source), selection=_release(specs),
                            description=f"{_RELEASE} — {source}'s cohorts."),
        dg.define_asset_job(job_name("drift", source), selection=_of(specs, "drift"), partitions_def=partitions,
                            description=f"Drift of one extract of {source} against each of its cohorts' champion "
                            "training data, and the external evaluation of the champion (else the latest candidate) "
                            "on that extract, with intervals (partitioned by extract)."),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    specs = load_all_cohorts()
    jobs = [
        dg.define_asset_job(job_name("training"), selection=_of(specs, *_MODELLING),
                            description="Rebuild features, split, fit and register baseline and candidate, evaluate — "
                            "every cohort of every source (each on its own source's rows)."),
        dg.define_asset_job(job_name("features"), selection=_of(specs, "features"),
                            description="Rebuild every cohort's features from its source's validated extracts."),
        dg.define_asset_job(job_name("release"), selection=_release(specs), description=f"{_RELEASE} — every cohort."),
    ]
    for source in load_all_sources():
        jobs += _source_jobs(source, [s for s in specs if s.source == source])
    return dg.Definitions(jobs=jobs)

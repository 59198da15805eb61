"""Dagster wiring only: when and with what each domain function runs.

``defs/<domain>/assets.py`` declares each asset (key, deps, checks, config) and calls one step of
``clinical_mlops.<domain>.steps``; :mod:`.resources` holds the resources (warehouse, landing zone,
MLflow, pseudonymisation key, reports, governance policy) and :mod:`.failures` turns a step's error
into the run failure Dagster shows.
"""

__all__ = ["audit", "automation", "checks", "dagster_internals", "drift", "evaluation", "failures", "fairness", "features",
           "ingestion", "jobs", "monitoring", "partitions", "progress", "registry", "resources", "scoring", "training", "validation"]

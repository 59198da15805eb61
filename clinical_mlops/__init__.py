"""clinical_mlops: the domain packages, their Dagster wiring (``defs``) and the entry point (``definitions``)."""

__all__ = ["audit", "bench", "cli", "core", "definitions", "defs", "drift", "evaluation", "fairness",
           "features", "governance", "ingestion", "monitoring", "registry", "scoring", "sources", "training",
           "validation"]

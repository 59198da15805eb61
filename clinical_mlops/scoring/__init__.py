"""Scoring: the champion model applied to patients, in batch and online, every prediction traceable.

:mod:`.champion` resolves the champion in the registry and scores extracts into
``ml.batch_predictions``; :mod:`.service` is the online FastAPI service; :mod:`.api_keys`
holds its callers' keys (hashed); :mod:`.prediction_log` is its append-only, hash-chained log
and the ingestion of that log into the warehouse. Wired by ``clinical_mlops/defs/scoring``
(the log's ingestion by ``defs/monitoring``).
What each of its assets does is one function in :mod:`.steps`."""

__all__ = ["DEFAULT_COHORT", "api_keys", "champion", "prediction_log", "service", "steps"]

DEFAULT_COHORT = "synthetic_diabetes130_readmission_30d"
"""The cohort ``clinical-mlops serve`` and ``prediction-log verify`` use without ``--cohort``: the
readmission cohort on the synthetic source, the one ``clinical-mlops demo`` trains and promotes
(a cohort on a source is named ``<source>_<cohort>``)."""

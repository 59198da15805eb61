"""Scoring: the champion model applied to patients, in batch and online, every prediction traceable.

:mod:`.champion` resolves the champion in the registry and scores extracts into
``ml.batch_predictions``; :mod:`.service` is the online FastAPI service; :mod:`.api_keys`
holds its callers' keys (hashed); :mod:`.prediction_log` is its append-only, hash-chained log
and the ingestion of that log into the warehouse. Wired by ``clinical_mlops/defs/scoring``
(the log's ingestion by ``defs/monitoring``).
What each of its assets does is one function in :mod:`.steps`."""

__all__ = ["api_keys", "champion", "names", "prediction_log", "service", "steps"]

"""Drift: whether a new extract (its features, the model's scores, the label) still looks like the reference population.

:mod:`.statistics` decides, on the full data in DuckDB (KS, chi-square and PSI from value
counts, corrected across features), and keeps the results as a time series in the
``monitoring`` schema; :mod:`.report` draws Evidently's HTML report for people on a
reproducible sample. Wired by ``clinical_mlops/defs/drift``.
What each of its assets does is one function in :mod:`.steps`."""

__all__ = ["report", "settings", "statistics", "steps"]

"""Audit: what made a model version and what was done with it, in a form an auditor can check.

This package owns the append-only, hash-chained audit ledger with its signed head and DuckDB
mirror (``ledger``), what goes into it from Dagster's event log and the governance tables
(``events``), lineage from the warehouse and the MLflow run (``lineage``), model cards and
TRIPOD+AI reports (``model_card``), a version's training rows rebuilt from its recorded
extracts (``recorded_inputs``), the rebuild-and-compare replay of a registered model
(``replay``), and the self-verifying audit bundle (``bundle``) with its standard-library
verifier (``bundle_verifier``). It is wired into Dagster by ``clinical_mlops/defs/audit``.
What each of its assets does is one function in :mod:`.steps`."""

__all__ = [
    "bundle",
    "bundle_verifier",
    "events",
    "ledger",
    "lineage",
    "model_card",
    "recorded_inputs",
    "replay",
    "steps",
    "tags",
]

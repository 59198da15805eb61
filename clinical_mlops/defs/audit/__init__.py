"""Audit: the model card asset per cohort and the sensor that writes the audit ledger."""

__all__ = ["assets", "dagster_runs_in_mlflow", "evidence", "sensors"]

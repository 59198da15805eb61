"""Audit: the model card asset per cohort and the sensor that writes the audit ledger."""

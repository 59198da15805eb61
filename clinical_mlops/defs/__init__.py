"""Dagster wiring only: when and with what each domain function runs."""

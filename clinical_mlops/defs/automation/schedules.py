"""Schedules: the nightly retrain and the daily monitoring run.

Cron strings and the time zone come from the environment, so an operator moves them without a
code change; the time zone is always explicit (default UTC), never the server's local time.

| variable | default | meaning |
| --- | --- | --- |
| ``CLINICAL_MLOPS_RETRAIN_CRON`` | ``0 2 * * *`` | when ``training_job`` runs |
| ``CLINICAL_MLOPS_MONITORING_CRON`` | ``0 6 * * *`` | when ``monitoring_job`` runs |
| ``CLINICAL_MLOPS_SCHEDULE_TIMEZONE`` | ``UTC`` | IANA time zone of both |
| ``CLINICAL_MLOPS_SCHEDULES`` | ``running`` | ``stopped`` to ship them switched off |
"""

import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

__all__ = ["build_monitoring_schedule", "build_training_schedule", "defs"]

_DEFAULT_RETRAIN_CRON = "0 2 * * *"
_DEFAULT_MONITORING_CRON = "0 6 * * *"
_DEFAULT_TIMEZONE = "UTC"


def _cron(variable: str, default: str) -> str:
    """The cron string in ``variable`` (or ``default``), refused at load if Dagster would refuse it.

    Dagster's public API has no cron validator; a ``ScheduleDefinition`` validates its cron string
    when it is built (five fields, values in range), so a throwaway one is the check, and the error
    names the environment variable instead of a schedule.
    """
    value = os.environ.get(variable, "").strip() or default
    try:
        dg.ScheduleDefinition(name="cron_check", job_name="cron_check", cron_schedule=value)
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(f"{variable}={value!r} is not a valid cron string (e.g. {default!r})") from None
    return value


def _timezone() -> str:
    value = os.environ.get("CLINICAL_MLOPS_SCHEDULE_TIMEZONE", "").strip() or _DEFAULT_TIMEZONE
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"CLINICAL_MLOPS_SCHEDULE_TIMEZONE={value!r} is not an IANA time zone (e.g. 'UTC', "
                         "'Europe/London')") from None
    return value


def _default_status() -> dg.DefaultScheduleStatus:
    value = os.environ.get("CLINICAL_MLOPS_SCHEDULES", "running").strip().lower()
    if value not in ("running", "stopped"):
        raise ValueError(f"CLINICAL_MLOPS_SCHEDULES={value!r}: expected 'running' or 'stopped'")
    return dg.DefaultScheduleStatus.RUNNING if value == "running" else dg.DefaultScheduleStatus.STOPPED


def build_training_schedule() -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="training_job_schedule",
        job_name="training_job",
        cron_schedule=_cron("CLINICAL_MLOPS_RETRAIN_CRON", _DEFAULT_RETRAIN_CRON),
        execution_timezone=_timezone(),
        default_status=_default_status(),
        tags={"trigger": "nightly_retrain"},
        description="Nightly retrain: features, split, baseline and candidate, evaluation — every cohort.",
    )


def build_monitoring_schedule() -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="monitoring_job_schedule",
        job_name="monitoring_job",
        cron_schedule=_cron("CLINICAL_MLOPS_MONITORING_CRON", _DEFAULT_MONITORING_CRON),
        execution_timezone=_timezone(),
        default_status=_default_status(),
        tags={"trigger": "daily_monitoring"},
        description="Daily production monitoring: prediction log, outcomes, performance, fairness, skew.",
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(schedules=[build_training_schedule(), build_monitoring_schedule()])

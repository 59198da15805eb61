"""Schedules: nightly retrain and daily monitoring — cron strings, explicit time zone, env overrides."""

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from clinical_mlops.defs.automation import schedules


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("CLINICAL_MLOPS_RETRAIN_CRON", "CLINICAL_MLOPS_MONITORING_CRON",
                 "CLINICAL_MLOPS_SCHEDULE_TIMEZONE", "CLINICAL_MLOPS_SCHEDULES"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_nightly_retrain_and_daily_monitoring_in_utc():
    training = schedules.build_training_schedule()
    monitoring = schedules.build_monitoring_schedule()
    assert (training.name, training.job_name, training.cron_schedule) == ("training_job_schedule", "training_job",
                                                                          "0 2 * * *")
    assert (monitoring.name, monitoring.job_name, monitoring.cron_schedule) == ("monitoring_job_schedule",
                                                                                "monitoring_job", "0 6 * * *")
    assert training.execution_timezone == monitoring.execution_timezone == "UTC"
    assert training.default_status == dg.DefaultScheduleStatus.RUNNING


def test_cron_and_timezone_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLINICAL_MLOPS_RETRAIN_CRON", "30 3 * * 1-5")
    monkeypatch.setenv("CLINICAL_MLOPS_SCHEDULE_TIMEZONE", "Europe/London")
    monkeypatch.setenv("CLINICAL_MLOPS_SCHEDULES", "stopped")
    training = schedules.build_training_schedule()
    assert training.cron_schedule == "30 3 * * 1-5"
    assert training.execution_timezone == "Europe/London"
    assert training.default_status == dg.DefaultScheduleStatus.STOPPED


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("CLINICAL_MLOPS_RETRAIN_CRON", "61 2 * * *", "CLINICAL_MLOPS_RETRAIN_CRON"),
        ("CLINICAL_MLOPS_MONITORING_CRON", "every night", "CLINICAL_MLOPS_MONITORING_CRON"),
        ("CLINICAL_MLOPS_SCHEDULE_TIMEZONE", "Mars/Olympus", "not an IANA time zone"),
        ("CLINICAL_MLOPS_SCHEDULES", "sometimes", "expected 'running' or 'stopped'"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        schedules.build_training_schedule()
        schedules.build_monitoring_schedule()


def test_the_retrain_fires_at_two_local_time_across_a_daylight_saving_change(monkeypatch):
    monkeypatch.setenv("CLINICAL_MLOPS_SCHEDULE_TIMEZONE", "Europe/London")
    training = schedules.build_training_schedule()
    london = ZoneInfo("Europe/London")
    # Ticks from Dagster's public API: a time-window partitioning on the schedule's cron and time zone
    # starts one window at every tick (the same cron iterator the scheduler uses).
    ticks = dg.TimeWindowPartitionsDefinition(
        cron_schedule=training.cron_schedule, timezone=training.execution_timezone, fmt="%Y-%m-%d %H:%M",
        start=datetime(2026, 3, 27, 12, 0, tzinfo=london),  # BST starts 29 March
    )
    keys = ticks.get_partition_keys(current_time=datetime(2026, 4, 1, 2, 0, tzinfo=london))
    local = [ticks.time_window_for_partition_key(key).start for key in keys]
    assert len(local) == 4
    assert [(t.day, t.hour, t.minute) for t in local] == [(28, 2, 0), (29, 2, 0), (30, 2, 0), (31, 2, 0)]
    assert [t.utcoffset().total_seconds() / 3600 for t in local] == [0, 1, 1, 1]


def test_a_tick_requests_one_run_of_the_job_with_its_trigger_tag():
    training = schedules.build_training_schedule()
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 28, 2, 0, tzinfo=ZoneInfo("UTC")))
    (request,) = training.evaluate_tick(context).run_requests
    assert request.tags["trigger"] == "nightly_retrain"
    monitoring = schedules.build_monitoring_schedule()
    (request,) = monitoring.evaluate_tick(context).run_requests
    assert request.tags["trigger"] == "daily_monitoring"


def test_schedules_are_in_the_definitions_and_their_jobs_resolve():
    from clinical_mlops.definitions import defs as load_defs

    defs = load_defs()
    names = {s.name: s for s in defs.schedules}
    assert {"training_job_schedule", "monitoring_job_schedule"} <= set(names)
    for schedule in names.values():
        assert defs.resolve_job_def(schedule.job_name).name == schedule.job_name
    monitoring_job = defs.resolve_job_def("monitoring_job")
    graph = defs.resolve_asset_graph()
    groups = {graph.get(k).group_name for k in monitoring_job.asset_layer.asset_graph.get_all_asset_keys()
              if graph.has(k) and k in monitoring_job.asset_layer.executable_asset_keys}
    assert groups == {"monitoring"}

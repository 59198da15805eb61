"""Sensors called directly with Dagster's testing contexts: landing zone, failed runs, failed drift checks."""


import json
import os
import shutil
import time

import dagster as dg
import pytest

from clinical_mlops.ingestion import landing
from clinical_mlops.core import warehouse
from clinical_mlops.defs.automation import sensors
from clinical_mlops.defs.resources import LandingZoneResource, WarehouseResource
from clinical_mlops.governance.policy import load_policy
from clinical_mlops_tests.conftest import SYNTHETIC, synthetic_source  # noqa: E402

SYNTHETIC_SOURCE = synthetic_source()
LANDING_SENSOR = sensors.build_landing_zone_sensor(SYNTHETIC)


def _write(path, text: str, *, age_seconds: float = 60.0) -> None:
    path.write_text(text)
    past = time.time() - age_seconds
    os.utime(path, (past, past))


def _tick(workspace, cursor=None, instance=None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(
        instance=instance or dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"landing_zone": LandingZoneResource(directory=str(workspace.landing_root)),
                   "warehouse": WarehouseResource(path=str(workspace.warehouse))},
    )
    return LANDING_SENSOR(context)


def test_content_already_in_raw_extracts_starts_no_run_whoever_landed_it(workspace, small_encounters):
    clean, leaky = workspace.landing / "month_000.csv", workspace.landing / "month_001.csv"
    small_encounters.head(50).to_csv(clean, index=False, lineterminator="\n")
    frame = small_encounters.iloc[50:100].copy()
    frame["payer_code"] = "123-45-6789"
    frame.to_csv(leaky, index=False, lineterminator="\n")
    with warehouse.connect(workspace.warehouse) as con:  # what `clinical-mlops land` did before the UI opened
        assert landing.land_extract(con, clean, SYNTHETIC_SOURCE).status == "landed"
        assert landing.land_extract(con, leaky, SYNTHETIC_SOURCE).status == "rejected"
    past = time.time() - 60
    for path in (clean, leaky):
        os.utime(path, (past, past))
    _write(workspace.landing / "month_002.csv", "a,b\n1,2\n")  # genuinely new
    instance = dg.DagsterInstance.ephemeral()
    result = _tick(workspace, instance=instance)
    assert [r.partition_key for r in result.run_requests] == ["month_002.csv"]
    (added,) = result.dynamic_partitions_requests
    assert sorted(added.partition_keys) == ["month_000.csv", "month_001.csv", "month_002.csv"]
    assert set(json.loads(result.cursor)["files"]) == {"month_000.csv", "month_001.csv", "month_002.csv"}
    instance.add_dynamic_partitions("synthetic_diabetes130_extracts", list(added.partition_keys))
    assert isinstance(_tick(workspace, cursor=result.cursor, instance=instance), dg.SkipReason)


def test_new_extracts_request_one_run_each_keyed_by_sha256(workspace):
    _write(workspace.landing / "month_000.csv", "a,b\n1,2\n")
    _write(workspace.landing / "month_001.csv", "a,b\n3,4\n")
    _write(workspace.landing / "notes.txt", "not an extract")
    result = _tick(workspace)
    assert isinstance(result, dg.SensorResult)
    requests = {r.partition_key: r for r in result.run_requests}
    assert set(requests) == {"month_000.csv", "month_001.csv"}
    for name, request in requests.items():
        assert request.run_key == landing.file_sha256(workspace.landing / name)
        assert request.tags["extract_sha256"] == request.run_key
    (added,) = result.dynamic_partitions_requests
    assert added.partitions_def_name == "synthetic_diabetes130_extracts"
    assert sorted(added.partition_keys) == ["month_000.csv", "month_001.csv"]
    cursor = json.loads(result.cursor)
    assert cursor["files"] == {name: r.run_key for name, r in requests.items()}


def test_nothing_is_processed_twice(workspace):
    _write(workspace.landing / "month_000.csv", "a,b\n1,2\n")
    first = _tick(workspace)
    second = _tick(workspace, cursor=first.cursor)
    assert isinstance(second, dg.SkipReason)
    assert "no new extract" in second.skip_message


def test_identical_content_under_another_name_starts_no_run(workspace):
    _write(workspace.landing / "month_000.csv", "a,b\n1,2\n")
    first = _tick(workspace)
    shutil.copyfile(workspace.landing / "month_000.csv", workspace.landing / "month_000_copy.csv")
    past = time.time() - 60
    os.utime(workspace.landing / "month_000_copy.csv", (past, past))
    second = _tick(workspace, cursor=first.cursor)
    assert isinstance(second, dg.SensorResult)
    assert not second.run_requests
    assert "month_000_copy.csv" in json.loads(second.cursor)["files"]  # remembered: not hashed again
    third = _tick(workspace, cursor=second.cursor)
    assert isinstance(third, dg.SkipReason)


def test_changed_content_under_the_same_name_gets_a_new_run_key(workspace):
    path = workspace.landing / "month_000.csv"
    _write(path, "a,b\n1,2\n")
    first = _tick(workspace)
    _write(path, "a,b\n1,2\n5,6\n", age_seconds=30)
    second = _tick(workspace, cursor=first.cursor)
    (request,) = second.run_requests
    assert request.partition_key == "month_000.csv"
    assert request.run_key == landing.file_sha256(path) != first.run_requests[0].run_key


def test_a_file_still_being_written_waits_for_the_next_tick(workspace):
    _write(workspace.landing / "month_000.csv", "a,b\n1,2\n", age_seconds=0)
    assert isinstance(_tick(workspace), dg.SkipReason)


def test_plan_landing_reads_a_bare_file_to_sha_cursor(workspace):
    path = workspace.landing / "month_000.csv"
    _write(path, "a,b\n1,2\n")
    state = sensors.parse_landing_cursor(json.dumps({"month_000.csv": landing.file_sha256(path)}))
    new, duplicates, _ = sensors.plan_landing([path], state)
    assert new == [] and duplicates == []


# ---------------------------------------------------------------------------------------------
# failed runs open incidents
# ---------------------------------------------------------------------------------------------


@dg.asset(key=["synthetic_diabetes130_readmission_30d", "exploding_step"], group_name="training", kinds={"python"})
def _exploding_step() -> None:
    raise RuntimeError("simulated failure for the incident sensor")


def _failed_run(instance: dg.DagsterInstance) -> tuple[dg.DagsterRun, dg.DagsterEvent]:
    result = dg.materialize([_exploding_step], instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    return instance.get_run_by_id(result.run_id), failure


def _failure_context(workspace, instance, run, event):
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_incident_sensor",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"warehouse": WarehouseResource(path=str(workspace.warehouse))},
    ).for_run_failure()


def test_a_failed_run_opens_one_incident_with_policy_owner(workspace):
    instance = dg.DagsterInstance.ephemeral()
    run, event = _failed_run(instance)
    context = _failure_context(workspace, instance, run, event)
    sensors.run_failure_incident_sensor(context)
    sensors.run_failure_incident_sensor(context)  # a retried tick must not open a second incident
    policy = load_policy()
    with warehouse.connect(workspace.warehouse) as con:
        rows = con.execute(
            'SELECT cohort, severity, owner, "check", status, evidence FROM monitoring.incidents'
        ).fetchall()
    assert len(rows) == 1
    cohort, severity, owner, check, status, evidence = rows[0]
    assert cohort == "synthetic_diabetes130_readmission_30d"  # from the failed step's asset key
    assert severity == "warn" and owner == policy.owner_for("warn") and status == "open"
    assert check == f"run_failure:{run.job_name}"
    evidence = json.loads(evidence)
    assert evidence["run_id"] == run.run_id
    assert evidence["failed_steps"] == ["synthetic_diabetes130_readmission_30d__exploding_step"]
    assert evidence["error_class"] == "RuntimeError"


def test_a_repeat_failure_updates_the_open_incident(workspace):
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):
        run, event = _failed_run(instance)
        sensors.run_failure_incident_sensor(_failure_context(workspace, instance, run, event))
    with warehouse.connect(workspace.warehouse) as con:
        assert con.execute("SELECT count(*) FROM monitoring.incidents").fetchall()[0][0] == 1
        notes = [r[0] for r in con.execute("SELECT note FROM monitoring.incident_updates ORDER BY updated_at").fetchall()]
    assert len(notes) == 2 and run.run_id in notes[-1]


def test_warehouse_writes_wait_for_the_lock(workspace, monkeypatch):
    calls = []

    class Locked:
        def __init__(self, fail_times):
            self.fail_times = fail_times

        def connect(self):
            calls.append(1)
            if len(calls) <= self.fail_times:
                import duckdb

                raise duckdb.IOException('Could not set lock on file "warehouse.duckdb": Conflicting lock is held')
            return warehouse_connect()

    def warehouse_connect():
        import contextlib

        @contextlib.contextmanager
        def opened():
            con = warehouse.connect(workspace.warehouse)
            try:
                yield con
            finally:
                con.close()

        return opened()

    monkeypatch.setattr(sensors.time, "sleep", lambda _s: None)
    assert sensors.with_warehouse(Locked(2), lambda con: 42) == 42 and len(calls) == 3
    import duckdb

    with pytest.raises(duckdb.IOException):
        sensors.with_warehouse(Locked(99), lambda con: 0, attempts=3)


# ---------------------------------------------------------------------------------------------
# failed drift checks request a retrain and escalate
# ---------------------------------------------------------------------------------------------


@dg.asset(key=["synthetic_diabetes130_readmission_30d", "encounter_features"], group_name="features", kinds={"python"})
def _features() -> None:
    return None


@dg.asset(key=["synthetic_diabetes130_readmission_30d", "candidate_model"], deps=[_features], group_name="training", kinds={"python"})
def _model() -> None:
    return None


@dg.asset(
    key=["synthetic_diabetes130_readmission_30d", "drift_report"], deps=[_features], group_name="drift", kinds={"python"},
    check_specs=[dg.AssetCheckSpec("no_dataset_drift", asset=dg.AssetKey(["synthetic_diabetes130_readmission_30d", "drift_report"]))],
)
def _drift(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    drifted = context.run.tags.get("drifted")
    evidence = {"no": "pass", "yes": "fail", "unknown": "insufficient_evidence", "seen": "fail"}[drifted]
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(
        passed=evidence == "pass",
        metadata={"evidence": evidence, "newest_model_trained_on_extract": drifted == "seen"})])


def test_a_failed_drift_check_requests_a_retrain_once_and_escalates(workspace):
    defs = dg.Definitions(assets=[_features, _model, _drift])
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([_features, _model, _drift], instance=instance, tags={"drifted": "no"})

    def tick(cursor):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs,
            resources={"warehouse": WarehouseResource(path=str(workspace.warehouse))},
        )
        return sensors.drift_check_failed_sensor(context)

    assert isinstance(tick(None), dg.SkipReason)  # a passing check starts nothing
    dg.materialize([_drift], instance=instance, tags={"drifted": "yes"})
    result = tick(None)
    (request,) = result.run_requests
    assert request.run_key.startswith("drift-retrain:synthetic_diabetes130_readmission_30d:")
    assert set(request.asset_selection) == {dg.AssetKey(["synthetic_diabetes130_readmission_30d", "encounter_features"]),
                                            dg.AssetKey(["synthetic_diabetes130_readmission_30d", "candidate_model"])}
    assert request.tags["failed_checks"] == "no_dataset_drift"
    assert isinstance(tick(result.cursor), dg.SkipReason)  # seen: not requested again
    policy = load_policy()
    with warehouse.connect(workspace.warehouse) as con:
        (severity, owner, status), = con.execute(
            "SELECT severity, owner, status FROM monitoring.incidents WHERE cohort = 'synthetic_diabetes130_readmission_30d'"
        ).fetchall()
    assert severity == policy.drift.severity and owner == policy.owner_for(policy.drift.severity)
    assert status == "open"


def test_insufficient_evidence_or_data_already_trained_on_requests_no_retrain(workspace):
    defs = dg.Definitions(assets=[_features, _model, _drift])
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([_features, _model, _drift], instance=instance, tags={"drifted": "unknown"})
    dg.materialize([_drift], instance=instance, tags={"drifted": "seen"})
    context = dg.build_sensor_context(instance=instance, definitions=defs,
                                      resources={"warehouse": WarehouseResource(path=str(workspace.warehouse))})
    result = sensors.drift_check_failed_sensor(context)
    assert not result.run_requests and result.cursor, "both failures seen, neither is new drift in unseen data"
    assert not workspace.warehouse.exists(), "nothing escalated: no incident for no drift"


def test_sensors_run_by_default_and_target_existing_jobs():
    from clinical_mlops.definitions import defs as load_defs
    from clinical_mlops.defs.jobs import job_name
    from clinical_mlops.sources.contract import load_all_sources

    defs = load_defs()
    by_name = {s.name: s for s in defs.sensors}
    landing_sensors = [sensors.landing_zone_sensor_name(source) for source in load_all_sources()]
    assert sensors.landing_zone_sensor_name(SYNTHETIC) in landing_sensors
    for name in (*landing_sensors, "run_failure_incident_sensor", "drift_check_failed_sensor",
                 "automation_condition_sensor"):
        assert by_name[name].default_status == dg.DefaultSensorStatus.RUNNING, name
    for source in load_all_sources():  # each source's sensor starts its own source's ingestion job
        ingestion = job_name("ingestion", source)
        assert by_name[sensors.landing_zone_sensor_name(source)].job_name == ingestion
        assert defs.resolve_job_def(ingestion).name == ingestion
    assert defs.resolve_job_def("training_job").name == "training_job"

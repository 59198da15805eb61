"""The ledger is written with no manual step: ``record_run`` after a run, and the sensor for any run."""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg
import duckdb
import pytest

from clinical_mlops.audit import events as audit_events, ledger
from clinical_mlops.core import warehouse
from clinical_mlops.defs.audit import sensors
from clinical_mlops.defs.audit.assets import audit_ledger
from clinical_mlops.defs.resources import WarehouseResource


@dg.asset(check_specs=[dg.AssetCheckSpec("rows_positive", asset="toy_table", blocking=True)])
def toy_table() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "rows": 12,
            "sha256": "ab" * 32,
            "plot": dg.MetadataValue.md("![roc](data:image/png;base64," + "A" * 5000 + ")"),
            "extracts": dg.MetadataValue.json([{"extract_id": "e1", "sha256": "cd" * 32}]),
        },
        data_version=dg.DataVersion("v1"),
        check_results=[dg.AssetCheckResult(check_name="rows_positive", passed=True, metadata={"rows": 12})],
    )


@dg.asset
def broken_table() -> None:
    raise ValueError("value 123-45-6789 leaked into an exception message")


@dg.asset
def refused_table() -> None:
    raise dg.Failure(description="Extract refused: missing column(s): race. Nothing was landed.")


@pytest.fixture
def setup(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    warehouse_path = tmp_path / "warehouse.duckdb"
    warehouse.connect(warehouse_path).close()
    ok = dg.materialize([toy_table], instance=instance)
    failed = dg.materialize([broken_table], instance=instance, raise_on_error=False)
    refused = dg.materialize([refused_table], instance=instance, raise_on_error=False)
    return instance, warehouse_path, ledger.default_ledger_path(warehouse_path), ok.run_id, failed.run_id, refused.run_id


def _entries(path):
    return list(ledger.read_entries(path))


def test_record_run_writes_materializations_checks_and_failures(setup):
    instance, warehouse_path, ledger_path, ok_run, failed_run, refused_run = setup
    recording = sensors.record_run(instance, ok_run, warehouse_path=warehouse_path)
    assert recording.events_appended == 2 and recording.warehouse_skipped is None
    materialization, check = _entries(ledger_path)
    assert materialization.event_type == "asset_materialization" and materialization.subject == "asset:toy_table"
    assert materialization.payload["data_version"] == "v1" and materialization.payload["run_id"] == ok_run
    metadata = materialization.payload["metadata"]
    assert metadata["rows"] == 12 and metadata["sha256"] == "ab" * 32
    assert set(metadata["plot"]) == {"sha256", "bytes"}, "bulky metadata is recorded as a hash"
    assert set(metadata["extracts"]) == {"sha256", "bytes"}
    assert check.event_type == "asset_check_evaluation" and check.payload["passed"] is True
    assert check.payload["blocking"] is True and check.subject == "check:toy_table:rows_positive"

    sensors.record_run(instance, failed_run, warehouse_path=warehouse_path)
    failure = _entries(ledger_path)[-1]
    assert failure.event_type == "run_failure" and failure.subject == f"run:{failed_run}"
    step = failure.payload["failed_steps"][0]
    assert step["step_key"] == "broken_table" and "ValueError" in step["error_classes"]
    assert "123-45-6789" not in json.dumps(failure.as_dict()), "exception messages are hashed, never copied"

    sensors.record_run(instance, refused_run, warehouse_path=warehouse_path)
    refused = _entries(ledger_path)[-1]
    assert "missing column(s): race" in refused.payload["failed_steps"][0]["description"]
    assert ledger.verify(ledger_path).ok


def _audit_job_run(instance, warehouse_path):
    defs = dg.Definitions(assets=[audit_ledger], jobs=[sensors.audit_job],
                          resources={"warehouse": WarehouseResource(path=str(warehouse_path))})
    return defs.resolve_job_def("audit_job").execute_in_process(instance=instance)


def test_sensor_records_every_finished_run_once_and_requests_a_warehouse_sync(setup):
    instance, warehouse_path, ledger_path, ok_run, failed_run, refused_run = setup
    sensors.record_run(instance, ok_run, warehouse_path=warehouse_path)
    before = len(_entries(ledger_path))
    resources = {"warehouse": WarehouseResource(path=str(warehouse_path))}
    result = sensors.audit_ledger_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    entries = _entries(ledger_path)
    assert len(entries) == before + 2, "the two failed runs are new; the recorded run is not recorded again"
    assert {e.payload.get("run_id") for e in entries} == {ok_run, failed_run, refused_run}
    assert set(json.loads(result.cursor)) == {"PIPELINE_SUCCESS", "PIPELINE_FAILURE", "PIPELINE_CANCELED"}
    (request,) = result.run_requests
    assert request.run_key.startswith("audit-sync-")

    again = sensors.audit_ledger_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                                 cursor=result.cursor))
    assert len(_entries(ledger_path)) == len(entries) and not again.run_requests and again.skip_reason

    sync = _audit_job_run(instance, warehouse_path)
    check = sync.get_asset_check_evaluations()[0]
    assert check.check_name == "ledger_chain_verifies" and check.passed
    after_sync = sensors.audit_ledger_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                                      cursor=result.cursor))
    assert not after_sync.run_requests, "the sensor's own sync run does not trigger another sync"
    assert _entries(ledger_path)[-1].payload["asset_key"] == "audit_ledger"

    new_run = dg.materialize([toy_table], instance=instance)
    later = sensors.audit_ledger_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                                 cursor=after_sync.cursor))
    assert [e.payload["run_id"] for e in _entries(ledger_path)[-2:]] == [new_run.run_id] * 2
    assert len(later.run_requests) == 1


def test_model_registrations_and_governance_rows_are_recorded_once(setup):
    instance, warehouse_path, ledger_path, *_ = setup
    with warehouse.connect(warehouse_path) as con:
        con.execute(
            "INSERT INTO ml.model_versions VALUES (?, 'c', 'candidate', 'c_candidate', '3', 'run3', "
            "'hist_gradient_boosting', '{\"max_iter\": 10}', 0.2, 100, 20, "
            "'[{\"extract_id\": \"e1\", \"sha256\": \"aa\"}]', 't', 's', 'spec', 'abc', false, 'lock', "
            "'synthetic_diabetes130', 'contract-sha')",
            [datetime(2026, 1, 1)],
        )
        con.execute("CREATE TABLE audit.alias_history (changed_at TIMESTAMP, model_name VARCHAR, alias VARCHAR, "
                    "model_version VARCHAR, changed_by VARCHAR, patient_key VARCHAR)")
        con.execute("INSERT INTO audit.alias_history VALUES ('2026-01-02', 'c_candidate', 'champion', '3', 'dr_who', "
                    "'0123456789abcdef')")
    resources = {"warehouse": WarehouseResource(path=str(warehouse_path))}
    result = dg.materialize([audit_ledger], instance=instance, resources=resources)
    metadata = result.asset_materializations_for_node("audit_ledger")[0].metadata
    assert metadata["governance_rows_recorded"].value == 2
    governance = [e for e in _entries(ledger_path) if e.payload.get("source_table")]
    registered = next(e for e in governance if e.event_type == audit_events.EVENT_MODEL_REGISTERED)
    assert registered.subject == "model:c_candidate/3"
    assert registered.payload["params"] == {"max_iter": 10}
    assert registered.payload["input_extracts"] == [{"extract_id": "e1", "sha256": "aa"}]
    assert (registered.payload["source"], registered.payload["source_contract_sha256"]) == (
        "synthetic_diabetes130", "contract-sha")
    alias = next(e for e in governance if e.event_type == "alias_changed")
    assert alias.actor == "dr_who" and "patient_key" not in alias.payload
    sensors.record_run(instance, result.run_id, warehouse_path=warehouse_path)
    assert len([e for e in _entries(ledger_path) if e.payload.get("source_table")]) == len(governance)
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        assert ledger.verify(ledger_path, con=con).ok
        assert con.execute("SELECT count(*) FROM audit.ledger").fetchall()[0][0] == len(_entries(ledger_path))


def test_the_ledger_asset_fails_on_a_tampered_ledger(setup):
    instance, warehouse_path, ledger_path, ok_run, *_ = setup
    sensors.record_run(instance, ok_run, warehouse_path=warehouse_path)
    lines = ledger_path.read_bytes().splitlines(keepends=True)
    ledger_path.write_bytes(b"".join(lines[:-1]))
    with warehouse.connect(warehouse_path) as con:
        con.execute("INSERT INTO ml.model_versions VALUES (now(), 'c', 'baseline', 'c_baseline', '1', 'r', 'lr', "
                    "'{}', 0.2, 1, 1, '[]', 't', 's', 'spec', 'abc', false, 'lock', NULL, NULL)")
    result = dg.materialize([audit_ledger], instance=instance, raise_on_error=False,
                            resources={"warehouse": WarehouseResource(path=str(warehouse_path))})
    assert not result.success
    assert "does not verify" in result.get_step_failure_events()[0].step_failure_data.user_failure_data.description


def test_a_busy_warehouse_does_not_stop_the_ledger(setup, monkeypatch):
    instance, warehouse_path, ledger_path, ok_run, *_ = setup

    def busy(*args, **kwargs):
        raise duckdb.IOException("Could not set lock on file")

    monkeypatch.setattr(sensors.warehouse, "connect", busy)
    recording = sensors.record_run(instance, ok_run, warehouse_path=warehouse_path)
    assert recording.events_appended == 2 and "busy" in recording.warehouse_skipped


def test_the_sensor_is_registered_and_running_by_default():
    from clinical_mlops.definitions import defs

    definitions = defs()
    sensor = definitions.resolve_sensor_def("audit_ledger_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "audit_job"
    assert definitions.resolve_job_def("audit_job").name == "audit_job"


def test_a_record_that_would_leak_is_replaced_by_a_trace_of_its_refusal(setup):
    instance, warehouse_path, ledger_path, *_ = setup
    with warehouse.connect(warehouse_path) as con:
        con.execute("CREATE TABLE monitoring.incidents (opened_at TIMESTAMP, cohort VARCHAR, summary VARCHAR)")
        con.execute("INSERT INTO monitoring.incidents VALUES (now(), 'c', 'patient MRN: 12345678 readmitted')")
        outcome = audit_events.record_governance(con, ledger_path)
    assert outcome.appended == 1
    (incident,) = [e for e in _entries(ledger_path) if e.event_type == "incident"]
    assert "mrn" in incident.payload["payload_refused"] and "12345678" not in json.dumps(incident.as_dict())
    assert incident.subject == "cohort:c"

"""Failed runs as incidents: one per cohort touched, appended to while open, recorded once per run id."""

from __future__ import annotations

import json

import duckdb
import pytest

from clinical_mlops.governance.policy import load_policy
from clinical_mlops.monitoring import incidents


@pytest.fixture
def db(tmp_path):
    connection = duckdb.connect(str(tmp_path / "incidents.duckdb"))
    yield connection
    connection.close()


def _evidence(run_id: str, job: str = "training_job", error: str | None = "boom") -> dict:
    return {"run_id": run_id, "job_name": job, "partition": None, "failed_steps": ["a__fit"],
            "error_class": "RuntimeError", "error": error, "dagster_run": f"http://ui/runs/{run_id}"}


def test_run_recorded_is_false_on_a_fresh_warehouse_and_creates_the_tables(db):
    assert incidents.run_recorded(db, "run-1") is False
    assert incidents.count_open(db) == 0  # the tables exist, empty


def test_a_failed_run_opens_one_incident_per_cohort_with_the_policy_owner(db):
    policy = load_policy()
    opened = incidents.record_run_failure(db, ["cohort_a", "cohort_b"], _evidence("run-1"), policy=policy,
                                          severity="warn")
    assert [item["created"] for item in opened] == [True, True]
    assert {item["owner"] for item in opened} == {policy.owner_for("warn")}
    rows = db.execute('SELECT cohort, model, "check", severity, status, evidence FROM monitoring.incidents '
                      "ORDER BY cohort").fetchall()
    assert [r[:5] for r in rows] == [
        ("cohort_a", "training_job", "run_failure:training_job", "warn", "open"),
        ("cohort_b", "training_job", "run_failure:training_job", "warn", "open"),
    ]
    assert json.loads(rows[0][5])["run_id"] == "run-1"
    assert incidents.run_recorded(db, "run-1") is True
    assert incidents.run_recorded(db, "run-2") is False


def test_a_run_without_cohorts_is_recorded_for_all_cohorts(db):
    opened = incidents.record_run_failure(db, [], _evidence("run-1"), policy=load_policy(), severity="warn")
    assert len(opened) == 1
    assert db.execute("SELECT cohort FROM monitoring.incidents").fetchall() == [("(all cohorts)",)]


def test_recording_the_same_run_again_records_nothing(db):
    policy = load_policy()
    assert incidents.record_run_failure(db, ["cohort_a"], _evidence("run-1"), policy=policy, severity="warn")
    assert incidents.record_run_failure(db, ["cohort_a"], _evidence("run-1"), policy=policy, severity="warn") == []
    assert db.execute("SELECT count(*) FROM monitoring.incidents").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM monitoring.incident_updates").fetchone()[0] == 1


def test_another_failed_run_of_the_job_updates_the_open_incident(db):
    policy = load_policy()
    first = incidents.record_run_failure(db, ["cohort_a"], _evidence("run-1"), policy=policy, severity="warn")
    second = incidents.record_run_failure(db, ["cohort_a"], _evidence("run-2", error=None), policy=policy,
                                          severity="warn")
    assert second[0]["created"] is False and second[0]["incident_id"] == first[0]["incident_id"]
    assert db.execute("SELECT count(*) FROM monitoring.incidents").fetchone()[0] == 1
    notes = [r[0] for r in db.execute("SELECT note FROM monitoring.incident_updates ORDER BY updated_at, note").fetchall()]
    assert "another failed run run-2: RuntimeError" in notes  # no message: the error class
    assert incidents.run_recorded(db, "run-2") is True  # found in the update log, not the evidence
    assert incidents.record_run_failure(db, ["cohort_a"], _evidence("run-2"), policy=policy, severity="warn") == []


def test_a_resolved_incident_does_not_absorb_a_later_failure(db):
    policy = load_policy()
    first = incidents.record_run_failure(db, ["cohort_a"], _evidence("run-1"), policy=policy, severity="warn")
    incidents.update_status(db, first[0]["incident_id"], "resolved", "fixed")
    again = incidents.record_run_failure(db, ["cohort_a"], _evidence("run-3"), policy=policy, severity="warn")
    assert again[0]["created"] is True and again[0]["incident_id"] != first[0]["incident_id"]


def _drift(checks: list[str], opened: list[str]) -> dict:
    return {"checks": checks, "extracts": ["extract_002.csv"], "check_runs": ["run-9"], "incidents": opened}


def test_a_failed_drift_check_without_an_incident_is_escalated_at_the_policy_drift_severity(db):
    policy = load_policy()
    ids = incidents.escalate_drift(db, {"cohort_a": _drift(["no_feature_drift"], [])}, policy=policy)
    assert len(ids) == 1
    row = db.execute('SELECT incident_id, cohort, model, "check", severity, owner, evidence FROM monitoring.incidents'
                     ).fetchone()
    assert row[:6] == (ids[0], "cohort_a", "cohort_a_candidate", "cohort_a/drift_report:no_feature_drift",
                       policy.drift.severity, policy.owner_for(policy.drift.severity))
    evidence = json.loads(row[6])
    assert evidence["action"] == "retrain requested (training_job)" and evidence["check_runs"] == ["run-9"]
    again = incidents.escalate_drift(db, {"cohort_a": _drift(["no_feature_drift"], [])}, policy=policy)
    assert again == ids, "the incident still open for the same check is returned, not a second one"


def test_drift_incidents_the_drift_step_opened_are_returned_without_a_new_one(db):
    ids = incidents.escalate_drift(db, {"cohort_a": _drift(["no_feature_drift"], ["INC-1", "INC-2"]),
                                        "cohort_b": _drift(["a", "b"], [])}, policy=load_policy())
    assert ids[:2] == ["INC-1", "INC-2"] and len(ids) == 3
    assert db.execute('SELECT cohort, "check" FROM monitoring.incidents').fetchall() == [
        ("cohort_b", "cohort_b/drift_report:a,b")]

"""Incident records: what a failing blocking gate opens, with owner, deadline and evidence.

``monitoring.incidents`` holds one row per incident (id, opened_at, severity, owner, cohort,
model, check, evidence, status, due_by, policy hash); ``monitoring.incident_updates`` is an
append-only log of every status change, so an update never hides what was recorded before.
Owner, notification list and deadline come from the policy's escalation rule for the severity.
Evidence is aggregate (gaps, intervals, links, the policy hash) — never row-level data.
A failed Dagster run is recorded once (:func:`record_run_failure`, :func:`run_recorded`); a failed drift check
without an incident of its own is escalated (:func:`escalate_drift`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd

from clinical_mlops.governance.policy import Policy
from clinical_mlops.core.warehouse import scalar, transaction
from clinical_mlops.training.params import registered_model_name

__all__ = [
    "INCIDENT_DDL",
    "OPEN_STATUSES",
    "STATUSES",
    "Incident",
    "count_open",
    "ensure_tables",
    "escalate_drift",
    "list_incidents",
    "open_incident",
    "record_run_failure",
    "run_recorded",
    "update_status",
]

STATUSES: tuple[str, ...] = ("open", "acknowledged", "mitigating", "resolved", "dismissed")
OPEN_STATUSES: tuple[str, ...] = ("open", "acknowledged", "mitigating")

INCIDENT_DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS monitoring",
    """CREATE TABLE IF NOT EXISTS monitoring.incidents (
    incident_id VARCHAR PRIMARY KEY,
    opened_at TIMESTAMP NOT NULL,
    severity VARCHAR NOT NULL,              -- warn | block_promotion | open_incident
    owner VARCHAR NOT NULL,                 -- the policy role that owns the response
    owner_contact VARCHAR NOT NULL,
    notify_json VARCHAR NOT NULL,           -- roles told, from the policy's escalation rule
    due_by TIMESTAMP NOT NULL,              -- opened_at + the rule's within_hours
    cohort VARCHAR NOT NULL,
    model VARCHAR NOT NULL,                 -- registered name and version
    "check" VARCHAR NOT NULL,               -- asset key and check name
    evidence VARCHAR NOT NULL,              -- JSON: gaps, intervals, links, audit id
    status VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    policy_version VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS monitoring.incident_updates (
    incident_id VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    previous_status VARCHAR,
    status VARCHAR NOT NULL,
    note VARCHAR NOT NULL
)""",
)


@dataclass(frozen=True)
class Incident:
    """One incident as opened (or found already open) for a failing check."""

    incident_id: str
    opened_at: datetime
    severity: str
    owner: str
    owner_contact: str
    due_by: datetime
    cohort: str
    model: str
    check: str
    status: str
    created: bool  # False when an open incident for the same cohort, model and check already existed

    def as_metadata(self) -> dict[str, str]:
        return {
            "incident_id": self.incident_id, "severity": self.severity, "owner": self.owner,
            "due_by": self.due_by.isoformat(timespec="minutes") + "Z", "status": self.status,
        }


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in INCIDENT_DDL:
        con.execute(statement)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _row_to_incident(row: dict, created: bool) -> Incident:
    return Incident(
        incident_id=row["incident_id"], opened_at=row["opened_at"], severity=row["severity"], owner=row["owner"],
        owner_contact=row["owner_contact"], due_by=row["due_by"], cohort=row["cohort"], model=row["model"],
        check=row["check"], status=row["status"], created=created,
    )


def _fetch(con: duckdb.DuckDBPyConnection, where: str, params: list) -> list[dict]:
    cursor = con.execute(f'SELECT * FROM monitoring.incidents WHERE {where} ORDER BY opened_at', params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def open_incident(
    con: duckdb.DuckDBPyConnection,
    *,
    policy: Policy,
    severity: str,
    cohort: str,
    model: str,
    check: str,
    evidence: dict,
) -> Incident:
    """Open an incident, or return the one already open for this cohort, model and check."""
    ensure_tables(con)
    existing = _fetch(
        con, f"cohort = ? AND model = ? AND \"check\" = ? AND status IN ({', '.join('?' * len(OPEN_STATUSES))})",
        [cohort, model, check, *OPEN_STATUSES],
    )
    if existing:
        return _row_to_incident(existing[-1], created=False)
    rule = policy.escalation.for_severity(severity)
    now = _now()
    incident_id = f"INC-{now:%Y%m%d}-{uuid.uuid4().hex[:8]}"
    due_by = now + timedelta(hours=rule.within_hours)
    row = {
        "incident_id": incident_id, "opened_at": now, "severity": severity, "owner": rule.owner,
        "owner_contact": policy.owners.contact(rule.owner), "notify_json": json.dumps(list(rule.notify)),
        "due_by": due_by, "cohort": cohort, "model": model, "check": check,
        "evidence": json.dumps(evidence, sort_keys=True, default=str), "status": "open", "updated_at": now,
        "policy_version": policy.version, "policy_sha256": policy.sha256,
    }
    with transaction(con):
        con.execute(
            f"INSERT INTO monitoring.incidents ({', '.join(chr(34) + k + chr(34) for k in row)}) "
            f"VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        con.execute(
            "INSERT INTO monitoring.incident_updates VALUES (?, ?, NULL, 'open', ?)",
            [incident_id, now, f"opened by failing check {check}"],
        )
    return _row_to_incident(row, created=True)


def update_status(con: duckdb.DuckDBPyConnection, incident_id: str, status: str, note: str) -> None:
    """Move an incident to ``status``; the change and its note are appended to the update log."""
    if status not in STATUSES:
        raise ValueError(f"unknown incident status {status!r} (expected one of {', '.join(STATUSES)})")
    ensure_tables(con)
    rows = _fetch(con, "incident_id = ?", [incident_id])
    if not rows:
        raise KeyError(f"no incident {incident_id}")
    now = _now()
    with transaction(con):
        con.execute("UPDATE monitoring.incidents SET status = ?, updated_at = ? WHERE incident_id = ?",
                    [status, now, incident_id])
        con.execute("INSERT INTO monitoring.incident_updates VALUES (?, ?, ?, ?, ?)",
                    [incident_id, now, rows[0]["status"], status, note])


def list_incidents(con: duckdb.DuckDBPyConnection, cohort: str | None = None, status: str | None = None) -> pd.DataFrame:
    ensure_tables(con)
    clauses, params = ["TRUE"], []
    if cohort:
        clauses.append("cohort = ?")
        params.append(cohort)
    if status:
        clauses.append("status = ?")
        params.append(status)
    return con.execute(
        f"SELECT * FROM monitoring.incidents WHERE {' AND '.join(clauses)} ORDER BY opened_at", params
    ).df()


def count_open(con: duckdb.DuckDBPyConnection, cohort: str | None = None) -> int:
    ensure_tables(con)
    sql = f"SELECT count(*) FROM monitoring.incidents WHERE status IN ({', '.join('?' * len(OPEN_STATUSES))})"
    params: list = list(OPEN_STATUSES)
    if cohort:
        sql += " AND cohort = ?"
        params.append(cohort)
    return int(con.execute(sql, params).fetchall()[0][0])


def run_recorded(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether a run was already recorded: an incident's evidence or an update's note mentions its id."""
    ensure_tables(con)
    pattern = f"%{run_id}%"
    return bool(scalar(con, "SELECT count(*) FROM monitoring.incidents WHERE evidence LIKE ?", [pattern])
                + scalar(con, "SELECT count(*) FROM monitoring.incident_updates WHERE note LIKE ?", [pattern]))


def record_run_failure(con: duckdb.DuckDBPyConnection, cohorts: list[str], evidence: dict, *, policy: Policy,
                       severity: str) -> list[dict]:
    """A failed run (``evidence``: its ``run_id``, ``job_name``, ``error``, ``error_class``…) opens one incident per
    cohort it touched (``(all cohorts)`` when none), or appends to the one already open for that cohort and job;
    each as metadata with ``created``. Idempotent for a run id: a run already recorded records nothing."""
    run_id = evidence["run_id"]
    if run_recorded(con, run_id):
        return []
    opened = []
    for cohort in cohorts or ["(all cohorts)"]:
        incident = open_incident(
            con, policy=policy, severity=severity, cohort=cohort, model=evidence["job_name"],
            check=f"run_failure:{evidence['job_name']}", evidence=evidence,
        )
        if not incident.created:
            update_status(con, incident.incident_id, incident.status,
                          f"another failed run {run_id}: {evidence['error'] or evidence['error_class']}")
        opened.append({**incident.as_metadata(), "created": incident.created})
    return opened


def escalate_drift(con: duckdb.DuckDBPyConnection, escalations: dict[str, dict], *, policy: Policy) -> list[str]:
    """Failed drift checks per cohort (``{cohort: {"checks", "extracts", "check_runs", "incidents"}}``): the
    incidents the drift step opened (one per cohort and extract), else one opened here at the policy's drift
    severity on the cohort's candidate model, its evidence noting the retrain requested. The incident ids."""
    opened = []
    for cohort, evidence in escalations.items():
        if evidence["incidents"]:  # the drift step opened them, one per cohort and extract
            opened.extend(evidence["incidents"])
            continue
        incident = open_incident(
            con, policy=policy, severity=policy.drift.severity, cohort=cohort,
            model=registered_model_name(cohort, "candidate"),
            check=f"{cohort}/drift_report:{','.join(evidence['checks'])}",
            evidence={**evidence, "action": "retrain requested (training_job)"},
        )
        opened.append(incident.incident_id)
    return opened

"""Reports and promotion decisions in the ``audit`` schema, each with the policy hash."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from clinical_mlops.core.warehouse import transaction
from clinical_mlops.registry.change_control._decision import Decision
from clinical_mlops.registry.change_control._report import ChangeControlReport

__all__ = ["DDL", "ensure_tables", "latest_report", "record_decision", "store_report"]


DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS audit",
    """CREATE TABLE IF NOT EXISTS audit.change_control_reports (
    report_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,          -- UTC
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    challenger_version VARCHAR NOT NULL,
    champion_version VARCHAR,
    modification_kinds_json VARCHAR NOT NULL,
    inside_envelope BOOLEAN,
    gate_passed BOOLEAN NOT NULL,           -- the decision under the policy at report time
    policy_sha256 VARCHAR NOT NULL,
    policy_version VARCHAR NOT NULL,
    report_sha256 VARCHAR NOT NULL,         -- of the Markdown text
    report_path VARCHAR,
    markdown VARCHAR NOT NULL,
    report_json VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS audit.promotion_decisions (
    decision_id VARCHAR PRIMARY KEY,
    decided_at TIMESTAMP NOT NULL,          -- UTC
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    challenger_version VARCHAR NOT NULL,
    champion_version VARCHAR,               -- champion when the decision was taken
    mode VARCHAR NOT NULL,                  -- champion_comparison | absolute | already_champion | manual
    passed BOOLEAN,                         -- gate outcome (NULL for a manual promotion without a gate)
    promoted BOOLEAN NOT NULL,              -- whether the champion alias moved
    modification_kinds_json VARCHAR NOT NULL,
    criteria_json VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL,
    policy_version VARCHAR NOT NULL,
    report_id VARCHAR
)""",
    # Added by the evidence rule; ADD COLUMN IF NOT EXISTS so existing warehouses keep working.
    "ALTER TABLE audit.change_control_reports ADD COLUMN IF NOT EXISTS gate_status VARCHAR",
    "ALTER TABLE audit.promotion_decisions ADD COLUMN IF NOT EXISTS status VARCHAR",  # promoted | blocked | pending_approval
    "ALTER TABLE audit.promotion_decisions ADD COLUMN IF NOT EXISTS waiver_ids_json VARCHAR",  # waivers relied on
    "ALTER TABLE audit.promotion_decisions ADD COLUMN IF NOT EXISTS next_command VARCHAR",  # what to run next
    "ALTER TABLE audit.promotion_decisions ADD COLUMN IF NOT EXISTS incidents_json VARCHAR",  # open incidents named
)

_REPORT_COLUMNS = ("report_id, created_at, cohort, model_name, challenger_version, champion_version, "
                   "modification_kinds_json, inside_envelope, gate_passed, policy_sha256, policy_version, "
                   "report_sha256, report_path, markdown, report_json, gate_status")
_DECISION_COLUMNS = ("decision_id, decided_at, cohort, model_name, challenger_version, champion_version, mode, "
                     "passed, promoted, modification_kinds_json, criteria_json, reason, actor, policy_sha256, "
                     "policy_version, report_id, status, waiver_ids_json, next_command, incidents_json")


def _placeholders(columns: str) -> str:
    return ", ".join("?" * len(columns.split(",")))


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


def store_report(con: duckdb.DuckDBPyConnection, report: ChangeControlReport, decision: Decision,
                 markdown: str, path: Path | None = None) -> str:
    """Append the report (Markdown and JSON) to ``audit.change_control_reports``; return its id."""
    ensure_tables(con)
    report_id = uuid.uuid4().hex
    with transaction(con):
        con.execute(
            f"INSERT INTO audit.change_control_reports ({_REPORT_COLUMNS}) VALUES ({_placeholders(_REPORT_COLUMNS)})",
            [
                report_id, datetime.now(UTC).replace(tzinfo=None), report.cohort, report.model_name,
                report.challenger.version, None if report.champion is None else report.champion.version,
                json.dumps([m.kind for m in report.modifications]),
                None if report.envelope is None else report.envelope.inside, decision.passed,
                report.policy_sha256, report.policy_version, hashlib.sha256(markdown.encode()).hexdigest(),
                None if path is None else str(path), markdown, report.to_json(), decision.status,
            ],
        )
    return report_id


def latest_report(con: duckdb.DuckDBPyConnection, cohort: str, model_name: str | None = None
                  ) -> tuple[str, ChangeControlReport] | None:
    """The most recent stored report of a cohort (of one challenger model, if given), with its id."""
    ensure_tables(con)
    where, params = ("cohort = ?", [cohort]) if model_name is None else ("cohort = ? AND model_name = ?",
                                                                         [cohort, model_name])
    rows = con.execute(
        f"SELECT report_id, report_json FROM audit.change_control_reports WHERE {where} "
        "ORDER BY created_at DESC LIMIT 1",
        params,
    ).fetchall()
    if not rows:
        return None
    return rows[0][0], ChangeControlReport.from_json(rows[0][1])


def record_decision(
    con: duckdb.DuckDBPyConnection,
    *,
    cohort: str,
    model_name: str,
    challenger_version: str,
    champion_version: str | None,
    mode: str,
    passed: bool | None,
    promoted: bool,
    modification_kinds: Sequence[str],
    criteria_json: str,
    reason: str,
    actor: str,
    policy_sha256: str,
    policy_version: str,
    report_id: str | None = None,
    status: str | None = None,
    waiver_ids: Sequence[str] = (),
    next_command: str | None = None,
    incidents: Sequence[str] = (),
) -> str:
    """Append a promotion decision (gate or manual) to ``audit.promotion_decisions``; return its id.

    ``status`` is ``promoted`` | ``blocked`` | ``pending_approval``; ``waiver_ids`` the waivers the
    decision relied on; ``next_command`` what to run to move it on; ``incidents`` the open ones it names."""
    ensure_tables(con)
    decision_id = uuid.uuid4().hex
    with transaction(con):
        con.execute(
            f"INSERT INTO audit.promotion_decisions ({_DECISION_COLUMNS}) VALUES ({_placeholders(_DECISION_COLUMNS)})",
            [decision_id, datetime.now(UTC).replace(tzinfo=None), cohort, model_name, str(challenger_version),
             champion_version, mode, passed, promoted, json.dumps(list(modification_kinds)), criteria_json,
             reason, actor, policy_sha256, policy_version, report_id, status, json.dumps(list(waiver_ids)),
             next_command, json.dumps(list(incidents))],
        )
    return decision_id

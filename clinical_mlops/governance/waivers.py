"""Waivers: a named approver accepts, for one model version, a blocking criterion that lacks evidence.

A blocking check with insufficient evidence stops promotion (:mod:`clinical_mlops.core.evidence`).
Only a waiver lets it through: who waived, when (UTC), why, which evidence was missing, and until
when the waiver holds. A waiver never turns a ``fail`` into a pass: it covers only criteria whose
evidence was insufficient. Waivers live in ``audit.waivers`` (append-only; a row is never updated),
from which the audit ledger records them (``audit.events.GOVERNANCE_TABLES``); the promotion
decision lists the waivers it relied on and the model card prints them.

``criterion`` names what is waived: a promotion criterion (``fairness:recall_gap``, ``min_auroc``)
or ``not_assessable_groups`` — the acknowledgement that small groups could not be assessed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from clinical_mlops.core.warehouse import table_exists

__all__ = [
    "DDL",
    "DEFAULT_VALID_DAYS",
    "Waiver",
    "WaiverError",
    "active_waivers",
    "ensure_table",
    "record_waiver",
    "waivers_for",
]

DEFAULT_VALID_DAYS = 90
"""How long a waiver holds when the approver gives no expiry."""

DDL = """CREATE TABLE IF NOT EXISTS audit.waivers (
    waiver_id VARCHAR PRIMARY KEY,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    criterion VARCHAR NOT NULL,          -- e.g. fairness:recall_gap, min_auroc, not_assessable_groups
    missing_evidence_json VARCHAR NOT NULL,  -- what was insufficient when the waiver was given
    approved_by VARCHAR NOT NULL,        -- the named approver (the ledger's actor)
    reason VARCHAR NOT NULL,
    approved_at TIMESTAMP NOT NULL,      -- UTC
    expires_at TIMESTAMP NOT NULL,       -- UTC
    policy_sha256 VARCHAR NOT NULL
)"""


class WaiverError(ValueError):
    """A waiver that cannot be recorded (no approver, no reason, an expiry in the past)."""


@dataclass(frozen=True)
class Waiver:
    waiver_id: str
    cohort: str
    model_name: str
    model_version: str
    criterion: str
    missing_evidence: tuple[str, ...]
    approved_by: str
    reason: str
    approved_at: datetime
    expires_at: datetime
    policy_sha256: str

    def active(self, now: datetime | None = None) -> bool:
        return (now or _utc_now()) < self.expires_at

    def as_dict(self) -> dict:
        return {
            "waiver_id": self.waiver_id, "cohort": self.cohort, "model": f"{self.model_name} v{self.model_version}",
            "criterion": self.criterion, "missing_evidence": list(self.missing_evidence),
            "approved_by": self.approved_by, "reason": self.reason,
            "approved_at": self.approved_at.isoformat() + "Z", "expires_at": self.expires_at.isoformat() + "Z",
        }


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS audit")
    con.execute(DDL)


def record_waiver(
    con: duckdb.DuckDBPyConnection,
    *,
    cohort: str,
    model_name: str,
    model_version: str,
    criterion: str,
    missing_evidence: Sequence[str],
    approved_by: str,
    reason: str,
    policy_sha256: str,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> Waiver:
    """Append one waiver; the approver, the reason and what was missing are required."""
    now = now or _utc_now()
    expires_at = expires_at or now + timedelta(days=DEFAULT_VALID_DAYS)
    if not approved_by.strip():
        raise WaiverError("a waiver needs a named approver (--approver)")
    if not reason.strip():
        raise WaiverError("a waiver needs a reason (--reason)")
    if expires_at <= now:
        raise WaiverError(f"the waiver's expiry {expires_at:%Y-%m-%d %H:%M} UTC is not in the future")
    if not criterion.strip():
        raise WaiverError("a waiver names the criterion it covers")
    ensure_table(con)
    waiver = Waiver(
        waiver_id=str(uuid.uuid4()), cohort=cohort, model_name=model_name, model_version=str(model_version),
        criterion=criterion, missing_evidence=tuple(missing_evidence), approved_by=approved_by.strip(),
        reason=reason.strip(), approved_at=now, expires_at=expires_at, policy_sha256=policy_sha256,
    )
    con.execute(
        "INSERT INTO audit.waivers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [waiver.waiver_id, cohort, model_name, waiver.model_version, criterion,
         json.dumps(list(waiver.missing_evidence)), waiver.approved_by, waiver.reason, now, expires_at,
         policy_sha256],
    )
    return waiver


def waivers_for(con: duckdb.DuckDBPyConnection, model_name: str, model_version: str) -> list[Waiver]:
    """Every waiver ever recorded for one model version, oldest first (none before the table exists; reads only,
    so a read-only connection will do)."""
    if not table_exists(con, "audit.waivers"):
        return []
    rows = con.execute(
        """SELECT waiver_id, cohort, model_name, model_version, criterion, missing_evidence_json, approved_by,
                  reason, approved_at, expires_at, policy_sha256
           FROM audit.waivers WHERE model_name = ? AND model_version = ? ORDER BY approved_at, waiver_id""",
        [model_name, str(model_version)],
    ).fetchall()
    return [Waiver(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7], r[8], r[9], r[10]) for r in rows]


def active_waivers(
    con: duckdb.DuckDBPyConnection, model_name: str, model_version: str, *, now: datetime | None = None
) -> dict[str, Waiver]:
    """The newest unexpired waiver per criterion for one model version."""
    out: dict[str, Waiver] = {}
    for waiver in waivers_for(con, model_name, model_version):
        if waiver.active(now):
            out[waiver.criterion] = waiver
    return out

"""What goes into the audit ledger: orchestration events and governance records as ledger events.

Plain Python, no Dagster import: ``clinical_mlops/defs/audit/sensors.py`` reads Dagster's event
log and hands each record over as keyword arguments; this module decides what an entry holds.

* **Orchestration** — every asset materialization, asset check evaluation and run failure, one
  entry each, keyed ``dagster:<run_id>:<storage_id>`` so the CLI's after-run recording and the
  sensor's tailing never record an event twice.
* **Governance records in the warehouse** — every registered model version (``ml.model_versions``)
  and, where the tables exist, alias changes, promotion decisions, approvals, fairness verdicts
  and incidents. Each row is keyed by its table and content hash, so a row recorded once is
  never recorded again, and a row changed in place is recorded again as what it now says.

Metadata is summarised, never copied wholesale: numbers, booleans and short strings are kept;
long text (Markdown tables, embedded plots), JSON and lists are replaced by their sha256 and
size. Identifier-like columns are dropped from governance rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from clinical_mlops.audit import ledger
from clinical_mlops.core.reporting import canonical_json
from clinical_mlops.core.warehouse import table_exists as _table_exists

__all__ = [
    "EVENT_BUNDLE",
    "EVENT_CHECK",
    "EVENT_MATERIALIZATION",
    "EVENT_MODEL_CARD",
    "EVENT_MODEL_REGISTERED",
    "EVENT_REPLAY",
    "EVENT_RUN_FAILURE",
    "GOVERNANCE_TABLES",
    "GovernanceTable",
    "MAX_TEXT",
    "RecordOutcome",
    "check_evaluation_event",
    "governance_events",
    "materialization_event",
    "record_governance",
    "run_failure_event",
    "safe_event",
    "source_stamps",
    "summarise_metadata",
]

MAX_TEXT = 300
"""Strings longer than this are recorded as a hash and a length."""

EVENT_MATERIALIZATION = "asset_materialization"
EVENT_CHECK = "asset_check_evaluation"
EVENT_RUN_FAILURE = "run_failure"
EVENT_MODEL_REGISTERED = "model_registered"
EVENT_MODEL_CARD = "model_card_generated"
EVENT_BUNDLE = "audit_bundle_exported"
EVENT_REPLAY = "model_replayed"


def _hash_of(value: Any) -> dict[str, Any]:
    data = (value if isinstance(value, str) else canonical_json(value)).encode()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _safe_text(text: str | None, limit: int = MAX_TEXT) -> Any:
    """Short, identifier-free text as is; anything else as its hash."""
    if text is None:
        return None
    text = str(text)
    if len(text) > limit:
        return _hash_of(text)
    try:
        ledger.check_payload({"text": text})
    except ledger.PayloadError:
        return _hash_of(text)
    return text


def summarise_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Scalars kept, bulky or nested values replaced by ``{"sha256", "bytes"}``."""
    summary: dict[str, Any] = {}
    for name, value in metadata.items():
        key = str(name)
        if key.lower() in ledger.FORBIDDEN_KEYS:
            summary[f"{key}_hash"] = _hash_of(ledger.json_safe(value, key))
            continue
        if value is None or isinstance(value, (bool, int, float)):
            summary[key] = ledger.json_safe(value, key)
        elif isinstance(value, str):
            summary[key] = _safe_text(value)
        else:
            try:
                summary[key] = _hash_of(ledger.json_safe(value, key))
            except ledger.PayloadError:
                summary[key] = _hash_of(repr(value))
    return summary


def safe_event(event: ledger.Event) -> ledger.Event:
    """``event`` itself, or — if its payload would be refused — an entry saying so, with the payload's hash.

    A record that cannot be written as is must still leave a trace: the refusal is the entry.
    """
    try:
        ledger.check_payload(event.payload)
        return event
    except ledger.PayloadError as exc:
        try:
            digest = hashlib.sha256(canonical_json(ledger.json_safe(event.payload, "payload")).encode()).hexdigest()
        except (ledger.PayloadError, TypeError, ValueError):
            digest = hashlib.sha256(repr(event.payload).encode()).hexdigest()
        kept = {k: event.payload[k] for k in ("run_id", "job_name", "source_table") if k in event.payload}
        return ledger.Event(
            event_type=event.event_type,
            subject=event.subject,
            actor=event.actor,
            natural_key=event.natural_key,
            ts=event.ts,
            payload={**kept, "payload_refused": str(exc), "payload_sha256_refused": digest},
        )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


NO_SOURCE = {"source": None, "source_contract_sha256": None}
"""The stamp of an entry that concerns no one source (a global table row, a run across sources)."""


def source_stamps() -> dict[str, dict[str, str | None]]:
    """Source name and contract sha256 by name: each source's own, and each cohort's (its source's).

    Asset keys start with one of these names (``<source>/raw_extract``, ``<cohort>/candidate_model``), and
    governance rows name their cohort, so every ledger entry can carry the source it concerns.
    """
    from clinical_mlops.features.cohort import load_all_cohorts
    from clinical_mlops.sources.contract import load_all_sources

    stamps = {name: {"source": name, "source_contract_sha256": s.sha256} for name, s in load_all_sources().items()}
    for spec in load_all_cohorts():
        stamps[spec.name] = {"source": spec.source, "source_contract_sha256": spec.contract_sha256}
    return stamps


def _stamp(stamps: Mapping[str, Mapping] | None, name: str | None) -> dict[str, str | None]:
    return dict((stamps or {}).get(name or "", NO_SOURCE))


def _actor(actor: str | None, job_name: str) -> str:
    return actor or f"dagster:{job_name}"


def materialization_event(
    *,
    storage_id: int,
    run_id: str,
    job_name: str,
    asset_key: str,
    partition: str | None,
    metadata: Mapping[str, Any],
    tags: Mapping[str, str],
    timestamp: float | None,
    actor: str | None = None,
    stamps: Mapping[str, Mapping] | None = None,
) -> ledger.Event:
    """One asset materialization: its data and code versions, its source, and its summarised metadata."""
    subject = f"asset:{asset_key}" + (f"[{partition}]" if partition else "")
    return ledger.Event(
        event_type=EVENT_MATERIALIZATION,
        subject=subject,
        actor=_actor(actor, job_name),
        natural_key=f"dagster:{run_id}:{storage_id}",
        payload={
            "run_id": run_id,
            "job_name": job_name,
            "asset_key": asset_key,
            "partition": partition,
            "event_time": _iso(timestamp),
            "data_version": tags.get("dagster/data_version"),
            "code_version": tags.get("dagster/code_version"),
            **_stamp(stamps, asset_key.partition("/")[0]),
            "metadata": summarise_metadata(metadata),
        },
    )


def check_evaluation_event(
    *,
    storage_id: int,
    run_id: str,
    job_name: str,
    asset_key: str,
    check_name: str,
    passed: bool,
    severity: str,
    blocking: bool,
    description: str | None,
    metadata: Mapping[str, Any],
    partition: str | None,
    timestamp: float | None,
    actor: str | None = None,
    stamps: Mapping[str, Mapping] | None = None,
) -> ledger.Event:
    """One asset check result: passed or not, how severe, whether it blocks downstream, its source."""
    return ledger.Event(
        event_type=EVENT_CHECK,
        subject=f"check:{asset_key}:{check_name}" + (f"[{partition}]" if partition else ""),
        actor=_actor(actor, job_name),
        natural_key=f"dagster:{run_id}:{storage_id}",
        payload={
            "run_id": run_id,
            "job_name": job_name,
            "asset_key": asset_key,
            "check_name": check_name,
            "partition": partition,
            "passed": bool(passed),
            "severity": severity,
            "blocking": bool(blocking),
            "description": _safe_text(description, 500),
            "event_time": _iso(timestamp),
            **_stamp(stamps, asset_key.partition("/")[0]),
            "metadata": summarise_metadata(metadata),
        },
    )


def run_failure_event(
    *,
    storage_id: int,
    run_id: str,
    job_name: str,
    failure_reason: str | None,
    steps: Iterable[Mapping[str, Any]],
    timestamp: float | None,
    actor: str | None = None,
    stamps: Mapping[str, Mapping] | None = None,
) -> ledger.Event:
    """A failed run and its failed steps, stamped with the one source its failed steps concern (the
    stamp of no source when they span several or none; each step still names its asset).

    For each step: the step key, the exception classes in the cause chain, the sha256 of the
    error message (messages can quote data, so they are not copied), and the description of a
    deliberate ``Failure`` raised by our own code (written to be safe to log).
    """
    failed = [
        {
            "step_key": step.get("step_key"),
            "error_classes": list(step.get("error_classes") or []),
            "message_sha256": step.get("message_sha256"),
            "description": _safe_text(step.get("description"), 500),
        }
        for step in steps
    ]
    concerned = {str(_stamp(stamps, str(step["step_key"] or "").partition("__")[0])) for step in failed}
    stamp = _stamp(stamps, str(failed[0]["step_key"] or "").partition("__")[0]) if len(concerned) == 1 else NO_SOURCE
    return ledger.Event(
        event_type=EVENT_RUN_FAILURE,
        subject=f"run:{run_id}",
        actor=_actor(actor, job_name),
        natural_key=f"dagster:{run_id}:{storage_id}",
        payload={
            "run_id": run_id,
            "job_name": job_name,
            "failure_reason": failure_reason,
            "failed_steps": failed[:50],
            "failed_step_count": len(failed),
            "event_time": _iso(timestamp),
            **stamp,
        },
    )


# ---------------------------------------------------------------------------------------------
# governance records in the warehouse
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GovernanceTable:
    table: str
    event_type: str


GOVERNANCE_TABLES: tuple[GovernanceTable, ...] = (
    GovernanceTable("ml.model_versions", EVENT_MODEL_REGISTERED),
    GovernanceTable("audit.alias_history", "alias_changed"),
    GovernanceTable("audit.promotion_decisions", "promotion_decision"),
    GovernanceTable("audit.approvals", "approval"),
    GovernanceTable("audit.waivers", "waiver"),
    GovernanceTable("monitoring.fairness_verdicts", "fairness_verdict"),
    GovernanceTable("monitoring.incidents", "incident"),
)
"""Tables whose rows are decisions an auditor must see; absent tables are skipped."""

_JSON_COLUMNS = ("_json",)


def _row_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for column, value in row.items():
        if column.lower() in ledger.FORBIDDEN_KEYS:
            continue
        if isinstance(value, str) and column.endswith(_JSON_COLUMNS):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
            name = column.removesuffix("_json")
            plain = ledger.json_safe(parsed, column)
            payload[name] = plain if len(canonical_json(plain).encode()) <= 16_384 else _hash_of(plain)
            continue
        plain = ledger.json_safe(value, column)
        if isinstance(plain, str) and len(plain) > 2_000:
            plain = _hash_of(plain)
        payload[column] = plain
    return payload


def _row_stamp(stamps: Mapping[str, Mapping] | None, row: Mapping[str, Any]) -> dict[str, str | None]:
    stamp = _stamp(stamps, row.get("cohort"))
    if row.get("source") and row.get("source_contract_sha256"):
        stamp = {"source": row["source"], "source_contract_sha256": row["source_contract_sha256"]}
    return stamp


def _subject(table: str, row: Mapping[str, Any]) -> str:
    name, version = row.get("model_name"), row.get("model_version")
    if name is not None and version is not None:
        return f"model:{name}/{version}"
    if name is not None:
        return f"model:{name}"
    if row.get("cohort") is not None:
        return f"cohort:{row['cohort']}"
    return f"table:{table}"


def governance_events(con: duckdb.DuckDBPyConnection, actor: str | None = None,
                      stamps: Mapping[str, Mapping] | None = None) -> list[ledger.Event]:
    """One event per governance row, in each table's natural order, stamped with the source of the row's
    cohort (``source`` of the row itself where it has one); absent tables are skipped."""
    events: list[ledger.Event] = []
    for spec in GOVERNANCE_TABLES:
        if not _table_exists(con, spec.table):
            continue
        cursor = con.execute(f"SELECT * FROM {spec.table}")
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, values)) for values in cursor.fetchall()]
        if spec.table == "ml.model_versions":
            rows.sort(key=lambda r: (r["registered_at"], r["model_name"], int(r["model_version"])))
        for row in rows:
            try:
                payload = _row_payload(row)
            except ledger.PayloadError as exc:
                payload = {"payload_refused": str(exc),
                           "payload_sha256_refused": hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()}
            if spec.table == "ml.model_versions":
                natural = f"model_version:{row['model_name']}:{row['model_version']}"
            else:
                natural = f"{spec.table}:{hashlib.sha256(canonical_json(payload).encode()).hexdigest()}"
            row_actor = next((str(row[c]) for c in ("actor", "decided_by", "approved_by", "changed_by", "signer")
                              if row.get(c)), None)
            events.append(safe_event(
                ledger.Event(
                    event_type=spec.event_type,
                    subject=_subject(spec.table, row),
                    payload={"source_table": spec.table, **_row_stamp(stamps, row), **payload},
                    actor=row_actor or actor or "clinical_mlops",
                    natural_key=natural,
                )
            ))
    return events


@dataclass(frozen=True)
class RecordOutcome:
    appended: int
    mirrored: int
    skipped_reason: str | None = None


def record_governance(
    con: duckdb.DuckDBPyConnection, ledger_path, *, actor: str | None = None, mirror: bool = True
) -> RecordOutcome:
    """Append governance rows not yet in the ledger, then bring the DuckDB mirror up to date."""
    written = ledger.append_many(ledger_path, governance_events(con, actor, stamps=source_stamps()))
    mirrored = ledger.mirror_to_duckdb(con, ledger_path).inserted if mirror else 0
    return RecordOutcome(appended=len(written), mirrored=mirrored)

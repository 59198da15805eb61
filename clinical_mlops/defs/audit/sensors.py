"""The audit ledger is written with no manual step: after every run, and by a sensor.

* :func:`record_run` turns one finished run's materializations, asset check evaluations and
  failure into ledger entries, then records governance rows not yet in the ledger (model
  registrations, alias changes, promotion decisions, approvals, fairness verdicts, incidents)
  and brings the DuckDB mirror up to date. The CLI calls it after each in-process run, so the
  ledger is complete without a daemon.
* ``audit_ledger_sensor`` (running by default) tails the instance's run-status events with a
  cursor and appends the events of every run that finished — runs launched from the UI,
  schedules or other sensors. Both paths key entries by ``dagster:<run_id>:<storage_id>``, so an
  event recorded by one is skipped by the other.
* Both paths also log the run's evidence about each model version to MLflow, nested under the
  version's training run (:mod:`clinical_mlops.defs.audit.evidence`), idempotently; an MLflow
  failure there is a warning.

The sensor never opens the warehouse itself: DuckDB admits one writing process, and a sensor
holding it could make a running step fail. When it has recorded runs other than its own, it
requests a run of ``audit_job`` (only when it appended something: runs the CLI already recorded
request nothing), which materializes the ``audit_ledger`` asset in the warehouse
pool (governance rows into the ledger, then the DuckDB mirror) and so queues behind other writers.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from clinical_mlops.audit import events as audit_events, ledger, lineage
from clinical_mlops.core import warehouse
from clinical_mlops.defs.resources import WarehouseResource
from clinical_mlops.core.settings import default_paths
from clinical_mlops.defs.audit.evidence import EvidenceRecording, event_records, plain_metadata, record_evidence

__all__ = ["RunRecording", "audit_job", "audit_ledger_sensor", "record_run"]

_RECORDED_EVENT_TYPES = {
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.RUN_FAILURE,
}
_FINISHED = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED)
_RUNS_PER_TICK = 25


@dataclass(frozen=True)
class RunRecording:
    run_id: str
    events_appended: int
    governance_appended: int
    mirrored: int
    warehouse_skipped: str | None = None
    evidence: EvidenceRecording | None = None
    """What was logged to MLflow (nested runs per step and model version)."""


def _error_classes(error) -> list[str]:
    classes = []
    while error is not None and len(classes) < 10:
        classes.append(error.cls_name or "Error")
        error = error.cause
    return classes


def _step_failure(event) -> dict:
    data = event.event_specific_data
    error = getattr(data, "error", None)
    user = getattr(data, "user_failure_data", None)
    return {
        "step_key": event.step_key,
        "error_classes": _error_classes(error),
        "message_sha256": hashlib.sha256(error.message.encode()).hexdigest() if error is not None else None,
        "description": getattr(user, "description", None),
    }


def _run_events(instance: dg.DagsterInstance, run_id: str) -> list[ledger.Event]:
    """Ledger events for one run's materializations, check evaluations and failure."""
    run = instance.get_run_by_id(run_id)
    actor = (run.tags.get("clinical_mlops/actor") or run.tags.get("user")) if run is not None else None
    events: list[ledger.Event] = []
    step_failures: list[dict] = []
    stamps = audit_events.source_stamps()
    for record in event_records(instance, run_id, _RECORDED_EVENT_TYPES):
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        common = {"storage_id": record.storage_id, "run_id": run_id, "job_name": entry.job_name or "",
                  "timestamp": entry.timestamp, "actor": actor, "stamps": stamps}
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            events.append(audit_events.materialization_event(
                asset_key=materialization.asset_key.to_user_string(), partition=materialization.partition,
                metadata=plain_metadata(materialization.metadata), tags=materialization.tags or {}, **common,
            ))
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            events.append(audit_events.check_evaluation_event(
                asset_key=evaluation.asset_key.to_user_string(), check_name=evaluation.check_name,
                passed=evaluation.passed, severity=getattr(evaluation.severity, "value", str(evaluation.severity)),
                blocking=bool(getattr(evaluation, "blocking", False)), description=evaluation.description,
                metadata=plain_metadata(evaluation.metadata), partition=getattr(evaluation, "partition", None),
                **common,
            ))
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            step_failures.append(_step_failure(event))
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE:
            reason = getattr(event.event_specific_data, "failure_reason", None)
            events.append(audit_events.run_failure_event(
                failure_reason=getattr(reason, "value", None), steps=step_failures, **common,
            ))
    return [audit_events.safe_event(event) for event in events]


def _record_governance(warehouse_path: Path | str, ledger_path: Path | str) -> tuple[int, int, str | None]:
    """(appended, mirrored, skipped reason) for the warehouse's governance rows; a busy warehouse is skipped."""
    try:
        con = warehouse.connect(Path(warehouse_path), wait_seconds=5)
    except duckdb.Error as exc:  # another process holds the single DuckDB writer lock
        return 0, 0, f"warehouse busy ({type(exc).__name__}); recorded on a later tick"
    try:
        outcome = audit_events.record_governance(con, ledger_path)
        lineage.create_views(con)
        return outcome.appended, outcome.mirrored, None
    finally:
        con.close()


def record_run(
    instance: dg.DagsterInstance,
    run_id: str,
    *,
    ledger_path: Path | str | None = None,
    warehouse_path: Path | str | None = None,
    tracking_uri: str | None = None,
) -> RunRecording:
    """Append one finished run's events to the ledger, then governance rows and the mirror; then
    log its evidence to MLflow (``tracking_uri``: by default the store this process's runs used)."""
    warehouse_path = Path(warehouse_path) if warehouse_path else default_paths().warehouse
    ledger_path = Path(ledger_path) if ledger_path else ledger.default_ledger_path(warehouse_path)
    written = ledger.append_many(ledger_path, _run_events(instance, run_id))
    appended, mirrored, skipped = _record_governance(warehouse_path, ledger_path)
    evidence = record_evidence(instance, run_id, tracking_uri=tracking_uri)
    return RunRecording(run_id, len(written), appended, mirrored, skipped, evidence)


audit_job = dg.define_asset_job(
    "audit_job",
    selection=dg.AssetSelection.assets("audit_ledger"),
    description="Record governance rows (registrations, alias changes, decisions, incidents) in the audit ledger "
    "and refresh its DuckDB mirror; requested by audit_ledger_sensor.",
    tags={"clinical_mlops/audit_sync": "true"},
)


@dg.sensor(
    name="audit_ledger_sensor",
    job=audit_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Writes every finished run's materializations, check results and failures to the hash-chained "
    "audit ledger and its evidence about each model version to MLflow (nested under the version's run), then "
    "requests audit_job to record new governance rows and refresh the DuckDB mirror.",
)
def audit_ledger_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    cursors = json.loads(context.cursor) if context.cursor else {}
    ledger_path = ledger.default_ledger_path(warehouse.path)
    runs = events = 0
    needs_sync = False
    last_storage_id = 0
    for status in _FINISHED:
        result = context.instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=status), limit=_RUNS_PER_TICK,
            cursor=cursors.get(status.value), ascending=True,
        )
        for record in result.records:
            run_id = record.event_log_entry.run_id
            written = ledger.append_many(ledger_path, _run_events(context.instance, run_id))
            for problem in record_evidence(context.instance, run_id).problems:
                context.log.warning(f"run {run_id}: evidence not logged to MLflow: {problem}")
            runs += 1
            events += len(written)
            last_storage_id = max(last_storage_id, record.storage_id)
            if written and (record.event_log_entry.job_name or "") != audit_job.name:
                needs_sync = True  # runs the CLI recorded itself (record_run) add nothing: no sync run
        cursors[status.value] = result.cursor
    cursor = json.dumps(cursors, sort_keys=True)
    if not runs:
        return dg.SensorResult(cursor=cursor, skip_reason="no run finished since the last tick")
    context.log.info(f"{runs} finished run(s): {events} event(s) appended to {ledger_path}")
    requests = [dg.RunRequest(run_key=f"audit-sync-{last_storage_id}")] if needs_sync else []
    return dg.SensorResult(
        cursor=cursor, run_requests=requests,
        skip_reason=None if requests else f"{runs} audit run(s) recorded; nothing else to sync",
    )

"""Sensors: what starts work without anyone clicking "materialize".

* ``landing_zone_sensor_<source>`` — a new extract in the source's landing folder
  (``data/landing/<source>/``): adds its partition and requests one ``ingestion_job_<source>`` run with ``run_key`` = the file's sha256. The cursor maps each
  file to its sha256 (plus its size and mtime, so unchanged files are not re-hashed every tick):
  a file is never processed twice, and identical bytes under another name start no run. A file
  whose sha256 is already in ``raw.extracts`` (landed or refused, by the CLI or an earlier run)
  starts no run either: the sensor never repeats work done outside it.
* ``run_failure_incident_sensor`` — any failed run of this code location opens an incident
  (``clinical_mlops.monitoring.incidents``: owner and deadline from the policy); a repeat failure of the same
  job while the incident is open is appended to that incident's update log instead.
* ``drift_check_failed_sensor`` — a drift check on a ``[cohort, "drift_report"]`` asset that found
  drift (evidence ``fail``; insufficient evidence is no reason to retrain) in an extract the cohort's
  newest model was not trained on requests a retrain of that cohort (``training_job`` restricted to
  its assets; the downstream fairness, change-control and promotion assets follow through declarative
  automation). The drift step itself opened the incident (its id is in the check's metadata); a
  failed check without one is escalated here at the policy's drift severity. Failing *fairness* checks are handled by the
  fairness domain's own sensor (root cause, mitigation).
* ``automation_condition_sensor`` — evaluates every asset's ``AutomationCondition``.

All are RUNNING by default, so they work as soon as the daemon is up (``make ui`` / ``dg dev``).
Sensors that write the warehouse retry while a run holds DuckDB's single writer lock.
"""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dagster as dg
import duckdb

from clinical_mlops.ingestion import landing
from clinical_mlops.defs.dagster_internals import AssetCheckExecutionRecordStatus
from clinical_mlops.defs.jobs import job_name
from clinical_mlops.defs.partitions import extract_partitions
from clinical_mlops.defs.resources import LandingZoneResource, WarehouseResource

__all__ = [
    "DAGSTER_UI", "RUNNING", "SETTLE_SECONDS", "TRAINING_GROUPS", "automation_condition_sensor",
    "build_landing_zone_sensor", "drift_check_failed_sensor", "drift_check_keys", "drift_found", "landed_hashes",
    "landing_zone_sensor_name", "parse_landing_cursor", "plan_landing", "retrain_selection", "run_failure_evidence",
    "run_failure_incident_sensor", "why_not_retrained", "with_warehouse",
]

T = TypeVar("T")

RUNNING = dg.DefaultSensorStatus.RUNNING
SETTLE_SECONDS = float(os.environ.get("CLINICAL_MLOPS_LANDING_SETTLE_SECONDS", "2"))
"""A file modified more recently than this is left for the next tick (it may still be written)."""
TRAINING_GROUPS = ("features", "training", "evaluation")
DAGSTER_UI = os.environ.get("CLINICAL_MLOPS_DAGSTER_UI", "http://127.0.0.1:3000")


# ---------------------------------------------------------------------------------------------
# landing zone
# ---------------------------------------------------------------------------------------------


def parse_landing_cursor(cursor: str | None) -> dict:
    """``{"files": {name: sha256}, "stat": {name: [size, mtime_ns]}}`` (empty when no cursor)."""
    if not cursor:
        return {"files": {}, "stat": {}}
    state = json.loads(cursor)
    if "files" not in state:  # a bare file -> sha256 map
        state = {"files": state, "stat": {}}
    state.setdefault("stat", {})
    return state


def plan_landing(
    paths: list[Path], state: dict, *, now: float | None = None, settle_seconds: float = SETTLE_SECONDS
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    """Decide which files to ingest: (new (name, sha256) to run, duplicates (name, first name), new state)."""
    now = time.time() if now is None else now
    files = dict(state["files"])
    stats = dict(state["stat"])
    by_hash = {}
    for name, sha in sorted(files.items()):
        by_hash.setdefault(sha, name)
    new, duplicates = [], []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        signature = [stat.st_size, stat.st_mtime_ns]
        if stats.get(path.name) == signature and path.name in files:
            continue  # unchanged since it was hashed
        if now - stat.st_mtime < settle_seconds:
            continue  # still being written: look again next tick
        sha = landing.file_sha256(path)
        stats[path.name] = signature
        if files.get(path.name) == sha:
            continue  # touched, same bytes
        files[path.name] = sha
        first = by_hash.get(sha)
        if first is not None and first != path.name:
            duplicates.append((path.name, first))
            continue
        by_hash[sha] = path.name
        new.append((path.name, sha))
    return new, duplicates, {"files": files, "stat": stats}


def landed_hashes(warehouse: WarehouseResource, source: str, *, wait_seconds: float = 5.0) -> set[str] | None:
    """:func:`clinical_mlops.ingestion.landing.extract_hashes` of ``source`` (landed or refused); None while the
    warehouse is busy. Read-only, and never creates the warehouse: no file yet means nothing landed yet.
    """
    from clinical_mlops.core import warehouse as store

    path = Path(warehouse.path)
    if not path.exists():
        return set()
    try:
        con = store.connect(path, read_only=True, wait_seconds=wait_seconds)
    except duckdb.IOException:
        return None  # a run holds the single writer lock: decide on the next tick
    try:
        return landing.extract_hashes(con, source)
    finally:
        con.close()


def landing_zone_sensor_name(source: str) -> str:
    return f"landing_zone_sensor_{source}"


def build_landing_zone_sensor(source: str) -> dg.SensorDefinition:
    """The sensor watching ``<landing zone>/<source>/``: each new file lands and is validated once."""
    partitions = extract_partitions(source)

    @dg.sensor(
        name=landing_zone_sensor_name(source),
        job_name=job_name("ingestion", source),
        minimum_interval_seconds=30,
        default_status=RUNNING,
        description=f"A new extract in the landing folder of {source} (data/landing/{source}/): add its partition "
        "and land + validate it once (run key = sha256 of the file; identical content under another name, or "
        "content already in raw.extracts for this source whoever landed it, starts no run).",
    )
    def landing_zone_sensor(
        context: dg.SensorEvaluationContext, landing_zone: LandingZoneResource, warehouse: WarehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        state = parse_landing_cursor(context.cursor)
        paths = landing.list_extracts(landing_zone.source_dir(source))
        new, duplicates, next_state = plan_landing(paths, state)
        for name, first in duplicates:
            context.log.info(f"{name} holds the same bytes as {first}: not ingested again")
        if new:
            known = landed_hashes(warehouse, source)
            if known is None:
                return dg.SkipReason("the warehouse is busy; new extracts are looked at on the next tick")
            already = [(name, sha) for name, sha in new if sha in known]
            for name, _ in already:
                context.log.info(f"{name}: its content is already in raw.extracts; not ingested again")
            new = [(name, sha) for name, sha in new if sha not in known]
            registered = set(context.instance.get_dynamic_partitions(partitions.name))
            unregistered = [name for name, _ in already if name not in registered]
        else:
            unregistered = []
        added = [name for name, _ in new] + unregistered
        if not new:
            reason = f"no new extract among {len(paths)} file(s)"
            if next_state != state or added:
                return dg.SensorResult(
                    skip_reason=reason, cursor=json.dumps(next_state, sort_keys=True),
                    dynamic_partitions_requests=[partitions.build_add_request(added)] if added else [],
                )
            return dg.SkipReason(reason)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=sha, partition_key=name,
                              tags={"extract_sha256": sha, "trigger": "landing_zone", "source": source})
                for name, sha in new
            ],
            dynamic_partitions_requests=[partitions.build_add_request(added)],
            cursor=json.dumps(next_state, sort_keys=True),
        )

    return landing_zone_sensor


# ---------------------------------------------------------------------------------------------
# warehouse writes from sensors
# ---------------------------------------------------------------------------------------------


def with_warehouse(warehouse: WarehouseResource, action: Callable[[duckdb.DuckDBPyConnection], T], *,
                   attempts: int = 8, first_delay: float = 0.5) -> T:
    """Run ``action`` on a write connection, waiting (with backoff) while a run holds the lock."""
    delay = first_delay
    for attempt in range(attempts):
        try:
            with warehouse.connect() as con:
                return action(con)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def _cohort_names() -> list[str]:
    from clinical_mlops.features.cohort import load_all_cohorts

    return [spec.name for spec in load_all_cohorts()]


def _cohorts_of_run(run: dg.DagsterRun, step_keys: list[str]) -> list[str]:
    names = _cohort_names()
    found = set()
    for key in run.asset_selection or ():
        if len(key.path) > 1 and key.path[0] in names:
            found.add(key.path[0])
    for step in step_keys:
        for name in names:
            if step.startswith(f"{name}__"):
                found.add(name)
    return sorted(found)


def _first_line(message: str | None, limit: int = 300) -> str:
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return line[:limit]


# ---------------------------------------------------------------------------------------------
# failed runs -> incidents
# ---------------------------------------------------------------------------------------------


def run_failure_evidence(context: dg.RunFailureSensorContext) -> tuple[list[str], dict]:
    """Cohorts touched by the failed run and aggregate evidence (ids, step names, error class)."""
    run = context.dagster_run
    failures = context.get_step_failure_events()
    steps = [e.step_key for e in failures if e.step_key]
    error = None
    if failures and failures[0].step_failure_data and failures[0].step_failure_data.error:
        error = failures[0].step_failure_data.error
    elif context.failure_event.event_specific_data is not None:
        error = getattr(context.failure_event.event_specific_data, "error", None)
    while error is not None and getattr(error, "cause", None) is not None and error.cls_name.startswith("Dagster"):
        error = error.cause  # the user code's own exception, not Dagster's wrapper
    evidence = {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "failed_steps": steps,
        "error_class": getattr(error, "cls_name", None),
        "error": _first_line(getattr(error, "message", None) or context.failure_event.message),
        "dagster_run": f"{DAGSTER_UI.rstrip('/')}/runs/{run.run_id}",
    }
    return _cohorts_of_run(run, steps), evidence


@dg.run_failure_sensor(
    name="run_failure_incident_sensor",
    default_status=RUNNING,
    minimum_interval_seconds=30,
    description="A failed run opens an incident in monitoring.incidents (owner and deadline from the policy).",
)
def run_failure_incident_sensor(context: dg.RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    from clinical_mlops.governance.policy import load_policy
    from clinical_mlops.monitoring import incidents

    policy = load_policy()
    severity = os.environ.get("CLINICAL_MLOPS_RUN_FAILURE_SEVERITY", "warn")
    cohorts, evidence = run_failure_evidence(context)
    opened = with_warehouse(warehouse, lambda con: incidents.record_run_failure(con, cohorts, evidence, policy=policy,
                                                                                severity=severity))
    for item in opened:
        context.log.info(f"run {evidence['run_id']} failed: incident {item['incident_id']} "
                         f"({'opened' if item['created'] else 'updated'}, owner {item['owner']})")


# ---------------------------------------------------------------------------------------------
# failed drift checks -> retrain + escalation
# ---------------------------------------------------------------------------------------------


def _metadata(record) -> dict:
    evaluation = record.evaluation
    return {k: getattr(v, "value", v) for k, v in (evaluation.metadata if evaluation else {}).items()}


def drift_found(record) -> bool:
    """A failed drift check that calls for a retrain: drift found (evidence ``fail``, not insufficient
    evidence) in an extract the cohort's newest model was not trained on (else the data has not changed)."""
    metadata = _metadata(record)
    return metadata.get("evidence", "fail") == "fail" and not metadata.get("newest_model_trained_on_extract", False)


def why_not_retrained(record) -> str:
    metadata = _metadata(record)
    if metadata.get("evidence", "fail") != "fail":
        return f"not retrained: {metadata.get('evidence')} ({metadata.get('evidence_reason', '')})"
    return "not retrained: the newest model was already trained on this extract (no new data)"


def drift_check_keys(asset_graph) -> list[dg.AssetCheckKey]:
    return sorted(
        (key for key in asset_graph.asset_check_keys if key.asset_key.path[-1] == "drift_report"),
        key=lambda k: (k.asset_key.to_user_string(), k.name),
    )


def retrain_selection(asset_graph, cohort: str) -> list[dg.AssetKey]:
    """The cohort's assets in ``training_job`` (features, training and evaluation groups)."""
    return sorted(
        (key for key in asset_graph.get_all_asset_keys()
         if len(key.path) > 1 and key.path[0] == cohort and asset_graph.get(key).group_name in TRAINING_GROUPS),
        key=lambda k: k.to_user_string(),
    )


@dg.sensor(
    name="drift_check_failed_sensor",
    job_name="training_job",
    minimum_interval_seconds=60,
    default_status=RUNNING,
    description="A failed drift check requests a retrain of that cohort and escalates per the policy.",
)
def drift_check_failed_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    graph = context.repository_def.asset_graph
    keys = drift_check_keys(graph)
    if not keys:
        return dg.SkipReason("no drift checks in this code location")
    cursor = json.loads(context.cursor) if context.cursor else {}
    before = dict(cursor)
    failures: dict[str, list] = {}
    for key in keys:
        after = int(cursor.get(key.to_user_string(), 0))
        records = context.instance.event_log_storage.get_asset_check_execution_history(
            key, limit=100, status={AssetCheckExecutionRecordStatus.FAILED}
        )
        new = [r for r in records if r.id > after]
        if new:
            cursor[key.to_user_string()] = max(r.id for r in new)
            found = [r for r in new if drift_found(r)]
            for record in new:
                if record not in found:
                    context.log.info(f"{key.to_user_string()} [{record.partition}]: {why_not_retrained(record)}")
            if found:
                failures.setdefault(key.asset_key.path[0], []).extend((key, r) for r in found)
    if not failures:
        reason = "no new drift in an extract the newest model was not trained on"
        if cursor == before:
            return dg.SkipReason(reason)
        return dg.SensorResult(skip_reason=reason, cursor=json.dumps(cursor, sort_keys=True))
    from clinical_mlops.governance.policy import load_policy

    policy = load_policy()
    requests = []
    escalations = {}
    for cohort, items in sorted(failures.items()):
        latest = max(r.id for _, r in items)
        checks = sorted({k.name for k, _ in items})
        partitions = sorted({r.partition for _, r in items if r.partition})
        selection = retrain_selection(graph, cohort)
        if selection:
            requests.append(dg.RunRequest(
                run_key=f"drift-retrain:{cohort}:{latest}",
                asset_selection=selection,
                tags={"trigger": "drift_check_failed", "cohort": cohort, "failed_checks": ",".join(checks)[:200]},
            ))
        escalations[cohort] = {"checks": checks, "extracts": partitions, "check_runs": sorted({r.run_id for _, r in items}),
                               "incidents": sorted({i for _, r in items if (i := _metadata(r).get("incident_id"))})}

    from clinical_mlops.monitoring import incidents

    incident_ids = with_warehouse(warehouse, lambda con: incidents.escalate_drift(con, escalations, policy=policy))
    context.log.info(f"drift checks failed for {sorted(failures)}: retrain requested, incidents {incident_ids}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates every asset's AutomationCondition (downstream assets follow their parents, "
    "gated by blocking checks).",
)

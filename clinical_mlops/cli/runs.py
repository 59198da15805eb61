"""Launch the graph from Python: what ``clinical-mlops demo`` and ``land`` do, in Dagster runs.

Runs go to the project's Dagster instance (``DAGSTER_HOME``, by default the project root with
its ``dagster.yaml``), so everything the command line does is visible in the UI afterwards.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from clinical_mlops.core.settings import PROJECT_ROOT, switch_off_telemetry
from clinical_mlops.defs import dagster_internals as dagster_internals

__all__ = [
    "HOST_TAG",
    "PID_TAG",
    "PROCESS_STARTED_TAG",
    "QUIET_RUN_CONFIG",
    "RunOutcome",
    "UNFINISHED",
    "ingestion_definitions",
    "load_definitions",
    "project_instance",
    "record_or_warn",
    "recover_abandoned_runs",
    "register_extracts",
    "run_ingestion",
    "run_job",
    "run_training",
]

QUIET_RUN_CONFIG = {"loggers": {"progress": {}}}


PID_TAG = "clinical_mlops/pid"
HOST_TAG = "clinical_mlops/host"
PROCESS_STARTED_TAG = "clinical_mlops/process_started"
UNFINISHED = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
              dg.DagsterRunStatus.CANCELING)


def _process_started(pid: int) -> str | None:
    """The process's start time (distinguishes it from a later process given the same pid)."""
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _actor_tags() -> dict[str, str]:
    """Who started the run (the ledger's actor) and which process runs it (to recover it if killed)."""
    from clinical_mlops.audit import ledger

    return {
        "clinical_mlops/actor": ledger.default_actor(),
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
        PROCESS_STARTED_TAG: _process_started(os.getpid()) or "",
    }


def _process_gone(tags: dict[str, str]) -> bool:
    """True when the run's in-process executor was on this host and its process no longer exists."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    started = _process_started(int(tags[PID_TAG]))
    return started is None or started != tags.get(PROCESS_STARTED_TAG, started)


def recover_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs whose process died (``kill -9``, OOM, power loss) and free their pool slots.

    A run executed in-process by this package holds its ``duckdb_warehouse`` slot in the
    instance's storage; if the process is killed the run stays STARTED and the slot stays
    claimed, so every later run would wait for it forever. Only runs started by this package
    on this host (tagged with their pid and its start time) are touched: runs launched by the
    webserver or the daemon are the daemon's run monitoring's business. Returns one line per
    recovered run, for the caller to show.
    """
    recovered: list[str] = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(UNFINISHED), tags={HOST_TAG: socket.gethostname()})):
        if run.run_id == os.environ.get("DAGSTER_RUN_ID") or not _process_gone(dict(run.tags)):
            continue
        message = (f"run {run.run_id} ({run.job_name}) was abandoned: its process {run.tags[PID_TAG]} ended without "
                   "finishing it (killed?); marked failed and its warehouse pool slot freed")
        instance.report_run_failed(run, message)
        dagster_internals.free_concurrency_slots(instance, run.run_id)
        recovered.append(message)
    return recovered


def project_instance() -> dg.DagsterInstance:
    """The persistent Dagster instance configured by the top-level ``dagster.yaml``."""
    switch_off_telemetry()
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT))
    home = Path(os.environ["DAGSTER_HOME"])
    if home.resolve() == PROJECT_ROOT:
        os.chdir(PROJECT_ROOT)  # dagster.yaml's storage paths are relative to the project root
    # Two processes opening a new instance at once both create its SQLite tables, and one fails
    # ("table alembic_version already exists"): create them under an exclusive file lock.
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".clinical_mlops-instance.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
            instance.get_runs(limit=1)
            dagster_internals.open_concurrency_tables(instance)
            instance.all_instigator_state()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return instance


def load_definitions() -> dg.Definitions:
    from clinical_mlops.definitions import defs

    return defs()


def ingestion_definitions(source: str) -> dg.Definitions:
    """What ``ingestion_job_<source>`` needs and nothing else: every source's landing and validation
    assets, that one job, the project's resources, executor and loggers. The job it resolves is the one
    :func:`load_definitions` gives (same snapshot, so the run recorded is the same) at a fraction of the
    load: ``clinical-mlops land`` runs no other asset."""
    from clinical_mlops.defs import jobs, progress, resources
    from clinical_mlops.defs.ingestion import assets as ingestion
    from clinical_mlops.defs.validation import assets as validation

    return dg.Definitions.merge(ingestion.defs(), validation.defs(), resources.resources(), progress.defs(),
                                dg.Definitions(jobs=[jobs.ingestion_job(source)]))


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    failed_checks: list[str] = field(default_factory=list)
    """Every failed check, "asset:check", WARN and ERROR severity alike."""
    blocking_failures: list[str] = field(default_factory=list)
    """The failed checks of ERROR severity: gates that stop what depends on them."""
    error: str | None = None
    """The first failed step's error: the message of the exception that caused it, not Dagster's wrapper."""
    error_class: str | None = None
    """That exception's class name (``IOException``, ``OSError`` …), for the command line to classify."""
    step_errors: list[str] = field(default_factory=list)
    """Every failed step's error, first line each (a job over several cohorts may fail in more than one)."""
    metadata: dict[str, dict] = field(default_factory=dict)
    check_metadata: dict[str, dict] = field(default_factory=dict)
    """Each failed check's metadata ("asset:check" → values, with its ``description``), for one-line errors."""


def _outcome(result: dg.ExecuteInProcessResult) -> RunOutcome:
    failed_evaluations = [e for e in result.get_asset_check_evaluations() if not e.passed]
    failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed_evaluations]
    blocking = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in failed_evaluations if e.severity == dg.AssetCheckSeverity.ERROR
    ]
    metadata = {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    check_metadata = {
        f"{e.asset_key.to_user_string()}:{e.check_name}": {
            "description": e.description or "", **{k: getattr(v, "value", v) for k, v in e.metadata.items()}}
        for e in failed_evaluations
    }
    error = error_class = None
    step_errors: list[str] = []
    if not result.success:
        failures = result.get_step_failure_events()
        roots = [_root_error(f.step_failure_data.error) for f in failures if f.step_failure_data.error]
        step_errors = [message.partition("\n")[0] for message, _ in roots]
        error, error_class = roots[0] if roots else ("the run failed", None)
    return RunOutcome(
        run_id=result.run_id, success=result.success, failed_checks=failed, blocking_failures=blocking,
        error=error, error_class=error_class, step_errors=step_errors, metadata=metadata,
        check_metadata=check_metadata,
    )


def _root_error(info) -> tuple[str, str | None]:
    """(message, class name) of the innermost cause of a step failure (Dagster wraps user errors)."""
    while info.cause is not None and info.cls_name in ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError",
                                                       "DagsterResourceFunctionError"):
        info = info.cause
    return info.message.strip(), info.cls_name


def register_extracts(instance: dg.DagsterInstance, source: str, extract_ids: list[str]) -> None:
    """Add extract partitions of ``source`` (idempotent)."""
    from clinical_mlops.defs.partitions import extract_partitions

    name = extract_partitions(source).name
    known = set(instance.get_dynamic_partitions(name))
    new = [e for e in extract_ids if e not in known]
    if new:
        instance.add_dynamic_partitions(name, new)


def run_ingestion(defs: dg.Definitions, instance: dg.DagsterInstance, source: str, extract_id: str) -> RunOutcome:
    """Land and validate one extract of ``source`` (one run of ``ingestion_job_<source>``)."""
    from clinical_mlops.defs.jobs import job_name

    register_extracts(instance, source, [extract_id])
    return run_job(defs, instance, job_name("ingestion", source), partition_key=extract_id)


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job_name: str,
    *,
    partition_key: str | None = None,
    run_config: dict | None = None,
    asset_selection: list[dg.AssetKey] | None = None,
) -> RunOutcome:
    """Run one job of the project in-process on the project instance (``asset_selection``: a subset of it)."""
    job = defs.resolve_job_def(job_name)
    for note in recover_abandoned_runs(instance):
        print(f"note: {note}", file=sys.stderr, flush=True)
    config = {**QUIET_RUN_CONFIG, **(run_config or {})}
    result = job.execute_in_process(
        instance=instance, partition_key=partition_key, run_config=config, raise_on_error=False, tags=_actor_tags(),
        asset_selection=asset_selection,
    )
    return _outcome(result)


def run_training(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None,
                 source: str | None = None) -> RunOutcome:
    """Features, split, models and evaluation for every cohort (of ``source``: ``training_job_<source>``)."""
    from clinical_mlops.defs.jobs import job_name

    return run_job(defs, instance, job_name("training", source), run_config=run_config)


def record_or_warn(instance: dg.DagsterInstance, outcome: RunOutcome) -> None:
    """Record a finished run in the audit ledger (no daemon needed); a known failure (disk, lock) is a
    warning on stderr, the run's own result stands."""
    from clinical_mlops.cli import errors as cli_errors
    from clinical_mlops.defs.audit.sensors import record_run

    try:
        record_run(instance, outcome.run_id)
    except Exception as exc:
        message = cli_errors.describe(exc)
        if message is None:
            raise
        print(f"warning: run {outcome.run_id} not recorded in the audit ledger: {message}", file=sys.stderr, flush=True)

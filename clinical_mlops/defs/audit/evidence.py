"""MLflow holds the evidence trail: each step's evidence about a model version, under that version.

:func:`record_evidence` reads one finished Dagster run's asset materializations and check
evaluations. For every asset named in :data:`STEPS` whose metadata names a model version, it
logs one MLflow run nested under that version's training run
(:func:`clinical_mlops.core.tracking.log_step_evidence`):

* **metrics** — the asset's numeric and boolean metadata, and each of its checks as
  ``check.<name>.passed`` plus the check's numeric metadata;
* **artefacts** — the report files the step wrote (HTML, Markdown, JSON, PNG paths in its
  metadata), its Markdown tables and JSON summaries (each screened by the ledger's payload guard),
  and ``evidence.json``: the metadata summarised as the ledger summarises it;
* **tags** — the step, the Dagster run id and its URL, the asset and partition.

The Dagster run itself becomes one MLflow run listing those evidence runs, opened by dagster-mlflow
(:mod:`clinical_mlops.defs.audit.dagster_runs_in_mlflow`).

It is called where the ledger is written — after every CLI run (:func:`record_run`) and by
``audit_ledger_sensor`` for runs launched elsewhere — and is idempotent, so a run recorded by both
is logged once. A failure to reach MLflow is a warning: the run's result and its ledger entries
stand. No step is re-run and no row is read: the evidence is what the step already reported.

Which model an asset's evidence concerns is read from the metadata keys the assets emit today
(``registered_model`` / ``model_version``; a ``"<name> v<version>"`` label under ``model``,
``challenger``, ``<role>_model``; the drift ``reference``). An asset that changes those keys must
change :data:`STEPS` with it (``clinical_mlops_tests/audit/test_evidence.py`` fails otherwise).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from clinical_mlops.defs.audit import dagster_runs_in_mlflow
from clinical_mlops.defs.partitions import validated_key
from clinical_mlops.defs.resources import MLFLOW_UI

from clinical_mlops.audit import events as audit_events, ledger
from clinical_mlops.core.settings import default_paths
from clinical_mlops.evaluation.settings import ROLES

__all__ = [
    "STEPS",
    "EvidenceItem",
    "EvidenceRecording",
    "Step",
    "Subject",
    "event_records",
    "plain_metadata",
    "record_evidence",
    "run_evidence",
]

log = logging.getLogger(__name__)

DAGSTER_UI = os.environ.get("CLINICAL_MLOPS_DAGSTER_UI", "http://127.0.0.1:3000")
"""Where the nested runs link the Dagster run (the same variable the incident sensor reads)."""
VALIDATION_COUNTS = ("rows_landed", "rows_valid", "rows_quarantined")
EVIDENCE_EVENTS = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
_LABEL = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+) v(?P<version>[0-9]+)$")
_REFERENCE = re.compile(r"^\S+ (?P<name>[A-Za-z0-9_.\-]+) v(?P<version>[0-9]+)$")


@dataclass(frozen=True)
class Subject:
    """A model version an asset's evidence concerns; its metadata keys start with ``prefix``."""

    model_name: str
    model_version: str
    prefix: str = ""

    @property
    def label(self) -> str:
        return f"{self.model_name} v{self.model_version}"


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    value = metadata.get(key)
    return getattr(value, "value", value)


def _from_label(text: Any, pattern: re.Pattern = _LABEL, prefix: str = "") -> list[Subject]:
    match = pattern.match(str(text or "").strip())
    return [Subject(match["name"], match["version"], prefix)] if match else []


def labelled(key: str) -> Callable[[Mapping[str, Any]], list[Subject]]:
    """The model named by a ``"<name> v<version>"`` label under ``key``."""
    return lambda metadata: _from_label(_value(metadata, key))


def registered(metadata: Mapping[str, Any]) -> list[Subject]:
    """The model registered by the step (``registered_model`` and ``model_version``)."""
    name, version = _value(metadata, "registered_model"), _value(metadata, "model_version")
    return [Subject(str(name), str(version))] if name and version else []


def per_role(metadata: Mapping[str, Any]) -> list[Subject]:
    """One model per role, each labelled under ``<role>_model`` and owning the ``<role>_`` keys."""
    return [s for role in ROLES for s in _from_label(_value(metadata, f"{role}_model"), prefix=f"{role}_")]


def drift_reference(metadata: Mapping[str, Any]) -> list[Subject]:
    """The model whose training population the extract was compared against (``"<kind> <name> v<n>"``)."""
    return _from_label(_value(metadata, "reference"), _REFERENCE)


@dataclass(frozen=True)
class Step:
    """How one asset's evidence is found: the step's name and which model(s) it concerns."""

    name: str
    subjects: Callable[[Mapping[str, Any]], list[Subject]]
    siblings: bool = False
    """Also log every report file beside a reported file (the model card's folder)."""


STEPS: dict[str, Step] = {
    "baseline_model": Step("validation", registered),
    "candidate_model": Step("validation", registered),
    "model_evaluation": Step("evaluation", per_role),
    "fairness_report": Step("fairness", labelled("model")),
    "fairness_root_cause": Step("root_cause", labelled("model")),
    "mitigated_model": Step("mitigation", registered),
    "drift_report": Step("drift", drift_reference),
    "change_control_report": Step("change_control", labelled("challenger")),
    "promotion": Step("promotion", labelled("challenger")),
    "model_card": Step("model_card", per_role, siblings=True),
    "external_evaluation": Step("external_evaluation", labelled("model")),
    "batch_predictions": Step("scoring", labelled("model")),
    "production_monitoring": Step("production_monitoring", labelled("model_in_service")),
}
"""Asset name (last part of its key) → step. The training assets' step is the validation of the
extracts the version was trained on: the fit itself is the parent run."""


@dataclass(frozen=True)
class EvidenceItem:
    """One nested run to log: a step's evidence about one model version."""

    step: str
    subject: Subject
    asset_key: str
    partition: str | None
    metrics: dict[str, float]
    artifacts: tuple[Path, ...]
    texts: dict[str, str]


@dataclass(frozen=True)
class EvidenceRecording:
    logged: int = 0
    already_logged: int = 0
    problems: tuple[str, ...] = field(default_factory=tuple)
    dagster_run_mlflow_id: str | None = None
    """The MLflow run standing for the Dagster run (``dagster_runs_in_mlflow``), when one was recorded."""


def event_records(instance: dg.DagsterInstance, run_id: str, event_types: set) -> Iterator[Any]:
    """Every event-log record of ``run_id`` of these types, in storage order (paged)."""
    cursor = None
    while True:
        connection = instance.get_records_for_run(run_id, cursor=cursor, of_type=event_types, limit=1000)
        yield from connection.records
        if not connection.has_more:
            return
        cursor = connection.cursor


def _screened(value: Any) -> bool:
    """True when the ledger's payload guard would accept ``value`` (no identifiers, no rows)."""
    try:
        ledger.check_payload({"value": value})
        return True
    except (ledger.PayloadError, TypeError, ValueError):
        return False


def _number(value: Any) -> float | None:
    if isinstance(value, (dg.BoolMetadataValue, dg.IntMetadataValue, dg.FloatMetadataValue)):
        value = value.value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _report_files(metadata: Mapping[str, Any], subject: Subject, siblings: bool) -> list[Path]:
    from clinical_mlops.core import tracking

    files: list[Path] = []
    for value in metadata.values():
        if not isinstance(value, dg.PathMetadataValue):
            continue
        path = Path(value.path)
        if path.is_file():
            found = sorted(path.parent.iterdir()) if siblings else [path]
        elif path.is_dir():  # a report folder: this version's files in it
            found = sorted(path.glob(f"{subject.model_name}_v{subject.model_version}_*"))
        else:
            found = []
        files += [f for f in found if f.is_file() and f.suffix in tracking.EVIDENCE_SUFFIXES and f not in files]
    return files


def _texts(metadata: Mapping[str, Any]) -> dict[str, str]:
    texts = {}
    for key, value in metadata.items():
        if isinstance(value, dg.MarkdownMetadataValue):
            text = value.value or ""
            if text and "data:image" not in text and _screened(text):  # plots are logged as their PNG files
                texts[f"{key}.md"] = text
        elif isinstance(value, dg.JsonMetadataValue) and _screened(value.value):
            texts[f"{key}.json"] = json.dumps(value.value, indent=2, sort_keys=True, default=str)
    return texts


def plain_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metadata values as plain Python (summarised later: bulky values become hashes).

    A ``TableSchema`` (the ``dagster/column_schema`` of a validated table) becomes its column
    names and types: Dagster records refuse iteration, so they cannot be walked as tuples.
    """
    return {key: _plain(getattr(value, "value", value)) for key, value in (metadata or {}).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, dg.TableSchema):
        return [{"name": column.name, "type": column.type} for column in value.columns]
    return value


def _check_evidence(checks: list[Any]) -> tuple[dict[str, float], dict[str, Any]]:
    metrics: dict[str, float] = {}
    summary: dict[str, Any] = {}
    for check in checks:
        name = check.check_name
        metrics[f"check.{name}.passed"] = float(bool(check.passed))
        for key, value in (check.metadata or {}).items():
            number = _number(value)
            if number is not None:
                metrics[f"check.{name}.{key}"] = number
        summary[name] = {
            "passed": bool(check.passed),
            "severity": getattr(check.severity, "value", str(check.severity)),
            **audit_events.summarise_metadata({"description": check.description}),
            "metadata": audit_events.summarise_metadata(plain_metadata(check.metadata)),
        }
    return metrics, summary


def _validation_evidence(instance: dg.DagsterInstance, metadata: Mapping[str, Any]) -> tuple[dict, dict]:
    """Validation counts of the extracts a version was trained on, from their latest validation."""
    extracts = _value(metadata, "input_extracts") or []
    metrics: dict[str, float] = {c: 0.0 for c in VALIDATION_COUNTS}
    rows = []
    for extract in extracts:
        extract_id = str(extract.get("extract_id"))
        found = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=validated_key(str(_value(metadata, "source"))), asset_partitions=[extract_id]), limit=1).records
        row: dict[str, Any] = {"extract_id": extract_id, "sha256": extract.get("sha256")}
        if found:
            validated = found[0].asset_materialization.metadata
            counts = {c: int(_value(validated, c) or 0) for c in VALIDATION_COUNTS}
            for count, n in counts.items():
                metrics[count] += n
                metrics[f"{extract_id}.{count}"] = float(n)
            row.update(counts, failed_checks=_value(validated, "failed_checks") or {},
                       validation_engine=_value(validated, "validation_engine"),
                       dagster_run_id=found[0].run_id)
        else:
            row["validated"] = "no validation recorded in this Dagster instance"
        rows.append(row)
    metrics["extracts"] = float(len(extracts))
    metrics["extracts_validated"] = float(sum(1 for r in rows if "rows_landed" in r))
    if metrics["rows_landed"]:
        metrics["quarantine_fraction"] = metrics["rows_quarantined"] / metrics["rows_landed"]
    texts = {"validation.json": json.dumps({"extracts": rows}, indent=2, sort_keys=True, default=str)}
    return metrics, texts if _screened(rows) else {}


def _items_for(instance: dg.DagsterInstance, run_id: str, step: Step, asset_key: str, partition: str | None,
               metadata: Mapping[str, Any], checks: list[Any]) -> list[EvidenceItem]:
    items = []
    for subject in step.subjects(metadata):
        own = {k[len(subject.prefix):]: v for k, v in metadata.items() if k.startswith(subject.prefix)}
        if step.name == "validation":
            metrics, texts = _validation_evidence(instance, metadata)
            files: list[Path] = []
        else:
            metrics = {k: n for k, v in own.items() if (n := _number(v)) is not None}
            files = _report_files(own, subject, step.siblings)
            written = {f.read_text(encoding="utf-8") for f in files if f.suffix == ".md"}
            texts = {name: text for name, text in _texts(own).items() if text not in written}  # no copy of a file
        check_metrics, check_summary = _check_evidence(checks)
        metrics.update(check_metrics)
        texts["evidence.json"] = json.dumps({
            "step": step.name, "model": subject.label, "asset_key": asset_key, "partition": partition,
            "dagster_run_id": run_id, "metadata": audit_events.summarise_metadata(plain_metadata(own)),
            "checks": check_summary,
        }, indent=2, sort_keys=True, default=str)
        items.append(EvidenceItem(step.name, subject, asset_key, partition, metrics, tuple(files), texts))
    return items


def run_evidence(instance: dg.DagsterInstance, run_id: str) -> list[EvidenceItem]:
    """What :func:`record_evidence` would log for ``run_id`` (reads the event log only)."""
    materializations, checks = [], {}
    for record in event_records(instance, run_id, EVIDENCE_EVENTS):
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materializations.append(event.event_specific_data.materialization)
        else:
            evaluation = event.event_specific_data
            key = (evaluation.asset_key.to_user_string(), getattr(evaluation, "partition", None))
            checks.setdefault(key, []).append(evaluation)
    items = []
    for materialization in materializations:
        step = STEPS.get(materialization.asset_key.path[-1])
        if step is None:
            continue
        asset_key = materialization.asset_key.to_user_string()
        partition = materialization.partition
        # a check of a partitioned asset may be stored without the partition (its spec is unpartitioned)
        own_checks = checks.get((asset_key, partition), []) + (checks.get((asset_key, None), []) if partition else [])
        items += _items_for(instance, run_id, step, asset_key, partition, materialization.metadata or {}, own_checks)
    return items


def _default_tracking_uri() -> str:
    """The store this process's runs logged to, else the one the code location's resources use."""
    from clinical_mlops.core import tracking

    return tracking.configured_tracking_uri() or default_paths().mlflow_tracking_uri


def record_evidence(instance: dg.DagsterInstance, run_id: str, *, tracking_uri: str | None = None) -> EvidenceRecording:
    """Log ``run_id``'s evidence to MLflow, nested under each version's run; never raises for MLflow."""
    try:
        items = run_evidence(instance, run_id)
    except Exception as exc:  # noqa: BLE001 - the evidence trail never fails the run it describes
        return _warn(run_id, EvidenceRecording(problems=(f"event log unreadable ({type(exc).__name__})",)))
    if not items:
        return EvidenceRecording()
    from clinical_mlops.core import tracking  # MLflow only when there is evidence to log (not for a landing run)

    uri = tracking_uri or _default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return _warn(run_id, EvidenceRecording(problems=(f"no MLflow store at {uri}",)))
    run = instance.get_run_by_id(run_id)
    logged = existing = 0
    problems = []
    links = []
    run_url = f"{DAGSTER_UI.rstrip('/')}/runs/{run_id}"
    for item in items:
        try:
            result = tracking.log_step_evidence(
                model_name=item.subject.model_name, model_version=item.subject.model_version, step=item.step,
                metrics=item.metrics, artifacts=item.artifacts, texts=item.texts, dagster_run_id=run_id,
                dagster_run_url=run_url, partition=item.partition,
                tags={"dagster.asset_key": item.asset_key, "dagster.job_name": run.job_name if run else ""},
                tracking_uri=uri,
            )
        except Exception as exc:  # noqa: BLE001 - MLflow down, version deleted: a warning, not a failure
            first_line = (str(exc).splitlines() or [""])[0][:200]
            problems.append(f"{item.step} of {item.subject.label}: {type(exc).__name__}: {first_line}")
            continue
        logged += result.created
        existing += not result.created
        links.append(dagster_runs_in_mlflow.EvidenceLink(item.step, item.subject.label, item.partition or "",
                                                         result.run_id))
    dagster_run_mlflow_id = None
    try:
        dagster_run_mlflow_id = dagster_runs_in_mlflow.record_dagster_run(
            instance, run_id, links, tracking_uri=uri, dagster_run_url=run_url,
            mlflow_ui=os.environ.get("CLINICAL_MLOPS_MLFLOW_UI", MLFLOW_UI))
    except Exception as exc:  # noqa: BLE001 - as for the evidence runs: a warning, not a failure
        problems.append(f"the Dagster run's own MLflow run: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}")
    return _warn(run_id, EvidenceRecording(logged, existing, tuple(problems), dagster_run_mlflow_id))


def _warn(run_id: str, recording: EvidenceRecording) -> EvidenceRecording:
    for problem in recording.problems:
        log.warning(f"run {run_id}: evidence not logged to MLflow: {problem}")
    return recording

"""The pieces of a bundle: the folder writer and the records it copies (environment, MLflow run,
validation, governance tables, report files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from clinical_mlops.audit import ledger, lineage
from clinical_mlops.core import provenance
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.core.warehouse import columns as _columns, table_exists as _table_exists
from clinical_mlops.features.cohort import CohortSpec, CohortSpecError, cohorts_dir, load_all_cohorts
from clinical_mlops.sources.contract import ContractError, load_source
from clinical_mlops.sources import tables

__all__ = [
    "MAX_REPORT_BYTES",
    "REPORT_KEYWORDS",
    "REPORT_SUFFIXES",
    "BundleFolder",
    "copy_report_files",
    "mlflow_run_record",
    "model_rows",
    "write_environment",
    "write_governance_tables",
    "write_validation",
]

REPORT_KEYWORDS = ("fairness", "drift", "change_control", "governance", "validation", "promotion")
REPORT_SUFFIXES = (".html", ".md", ".json", ".csv", ".png", ".txt")
MAX_REPORT_BYTES = 25 * 1024 * 1024


class BundleFolder:
    """The bundle folder being written, and the lists of what it includes and what is absent (and why)."""

    def __init__(self, root: Path):
        self.root = root
        self.included: list[str] = []
        self.absent: list[str] = []

    def path(self, name: str) -> Path:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def text(self, name: str, content: str) -> None:
        self.path(name).write_text(content, encoding="utf-8")

    def json(self, name: str, data: Any) -> None:
        self.text(name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def csv(self, name: str, frame: pd.DataFrame) -> None:
        """Write ``frame`` without its identifier-like columns."""
        dropped = [c for c in frame.columns if str(c).lower() in ledger.FORBIDDEN_KEYS]
        frame = frame.drop(columns=dropped)
        self.path(name).write_text(frame.to_csv(index=False, lineterminator="\n"), encoding="utf-8")


def model_rows(
    con: duckdb.DuckDBPyConnection, table: str, record: lineage.ModelLineage, *, limit: int = 50_000
) -> pd.DataFrame | None:
    """Rows of ``table`` about this model (by name and version, else name, else cohort)."""
    if not _table_exists(con, table):
        return None
    columns = _columns(con, table)
    where: list[str] = []
    params: list[Any] = []
    if "model_name" in columns:
        where.append("CAST(model_name AS VARCHAR) = ?")
        params.append(record.model_name)
        if "model_version" in columns:
            where.append("CAST(model_version AS VARCHAR) = ?")
            params.append(record.model_version)
    elif "cohort" in columns:
        where.append("cohort = ?")
        params.append(record.cohort)
    else:
        return None
    safe = ", ".join(f'"{c}"' for c in columns if c.lower() not in ledger.FORBIDDEN_KEYS)
    return con.execute(f"SELECT {safe} FROM {table} WHERE {' AND '.join(where)} LIMIT {limit}", params).df()


def write_environment(
    bundle: BundleFolder, record: lineage.ModelLineage, run: dict[str, Any] | None
) -> dict[str, Any]:
    """The recorded environment (commit, lock, package versions), with the lock file and cohort spec when unchanged."""
    tags = (run or {}).get("tags", {})
    recorded_versions = {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")}
    current_lock = provenance.lock_file_sha256()
    info = {
        "git_commit": record.git_commit,
        "git_dirty": record.git_dirty,
        "lock_sha256": record.lock_sha256,
        "cohort_spec_sha256": record.cohort_spec_sha256,
        "package_versions_recorded": recorded_versions,
        "package_versions_now": provenance.package_versions(),
        "lock_file_included": False,
        "cohort_spec_included": False,
    }
    lock = PROJECT_ROOT / "uv.lock"
    if lock.exists() and current_lock == record.lock_sha256:
        shutil.copyfile(lock, bundle.path("environment/uv.lock"))
        info["lock_file_included"] = True
        bundle.included.append("lock file (uv.lock, sha256 as recorded)")
    else:
        bundle.absent.append("lock file: the checked-out uv.lock is not the recorded one "
                             f"(recorded {record.lock_sha256[:12]}, now {current_lock[:12]}); take it from git "
                             f"commit {record.git_commit[:12]}")
    spec = _current_spec(record.cohort)
    if spec is not None and spec.spec_hash == record.cohort_spec_sha256:
        shutil.copyfile(cohorts_dir() / f"{spec.cohort}.yaml", bundle.path("environment/cohort_spec.yaml"))
        for name in spec.sql_files:
            shutil.copyfile(cohorts_dir() / name, bundle.path(f"environment/cohort_sql/{name}"))
        info["cohort_spec_included"] = True
        bundle.included.append("cohort specification and its SQL (sha256 as recorded)")
    else:
        bundle.absent.append("cohort specification: the current files' hash differs from the recorded one")
    info["source"], info["source_contract_sha256"] = record.source, record.source_contract_sha256
    info["source_contract_included"] = False
    try:
        source = load_source(record.source)
    except ContractError:
        source = None
    if source is not None and source.sha256 == record.source_contract_sha256:
        shutil.copyfile(source.path, bundle.path("environment/source_contract.yaml"))
        base = _same_as(source.path)
        if base is not None:  # the version covers both files: sha256(own bytes + the other's bytes)
            shutil.copyfile(base, bundle.path("environment/source_contract_same_as.yaml"))
        info["source_contract_included"] = True
        bundle.included.append(f"source contract {record.source} (sha256 as recorded)")
    else:
        bundle.absent.append(f"source contract {record.source or '(none recorded)'}: the current contract's hash "
                             "differs from the recorded one")
    bundle.json("environment/provenance.json", info)
    return info


def mlflow_run_record(
    record: lineage.ModelLineage, tracking_uri: str | None, artifact_root: Path | str | None
) -> dict[str, Any] | None:
    """The MLflow run and model-version record of this version, or None when the registry is not reachable."""
    if tracking_uri is None:
        return None
    try:
        client = lineage.mlflow_client(tracking_uri, artifact_root)
        run = client.get_run(record.mlflow_run_id)
        version = client.get_model_version(record.model_name, record.model_version)
    except Exception:  # noqa: BLE001 - the registry is optional for a bundle
        return None
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "start_time_ms": run.info.start_time,
        "end_time_ms": run.info.end_time,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log-model")},
        "model_version_tags": dict(version.tags),
        "model_version_source": version.source,
    }


def write_validation(
    bundle: BundleFolder, con: duckdb.DuckDBPyConnection, record: lineage.ModelLineage
) -> None:
    """Per-extract validation summary and quarantine reasons (counts only)."""
    ids = [e.extract_id for e in record.extracts]
    placeholders = ", ".join("?" for _ in ids) or "NULL"
    quarantine = tables.quarantine_table(record.source)
    if not _table_exists(con, f"staging.{record.source}__quarantine"):
        quarantine = "(SELECT NULL::VARCHAR AS extract_id, NULL::VARCHAR AS reasons WHERE FALSE)"
    summary = con.execute(
        f"""SELECT e.extract_id, e.file_name, e.sha256, e.size_bytes, e.rows_landed, e.status, e.rejection_reason,
                   e.landed_at, coalesce(q.quarantined, 0) AS rows_quarantined,
                   e.rows_landed - coalesce(q.quarantined, 0) AS rows_valid
            FROM raw.extracts e
            LEFT JOIN (SELECT extract_id, count(*) AS quarantined FROM {quarantine} GROUP BY 1) q USING (extract_id)
            WHERE e.source = ? AND e.extract_id IN ({placeholders}) ORDER BY e.extract_id""",
        [record.source, *ids],
    ).df()
    bundle.csv("lineage/extracts.csv", summary[["extract_id", "file_name", "sha256", "size_bytes", "rows_landed",
                                                "status", "landed_at"]])
    bundle.csv("reports/validation_summary.csv", summary)
    reasons = con.execute(
        f"""SELECT extract_id, trim(reason) AS reason, count(*) AS rows
            FROM (SELECT extract_id, unnest(string_split(reasons, ';')) AS reason FROM {quarantine}
                  WHERE extract_id IN ({placeholders}))
            GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2""",
        ids,
    ).df()
    bundle.csv("reports/quarantine_reasons.csv", reasons)
    bundle.included.append("validation summary per extract and quarantine reasons (counts)")


def write_governance_tables(
    bundle: BundleFolder, con: duckdb.DuckDBPyConnection, record: lineage.ModelLineage
) -> None:
    """Rows about this model from the fairness, drift, change-control and incident tables that exist."""
    tables = {
        "fairness": ("monitoring.fairness_metrics", "monitoring.fairness_verdicts"),
        "drift": ("monitoring.drift_metrics",),
        "change_control": ("audit.promotion_decisions", "audit.alias_history", "audit.approvals"),
        "incidents": ("monitoring.incidents",),
    }
    for kind, names in tables.items():
        found = False
        for table in names:
            frame = model_rows(con, table, record)
            if frame is None:
                continue
            found = True
            bundle.csv(f"reports/{kind}/{table.replace('.', '__')}.csv", frame)
            bundle.included.append(f"{kind}: {table} ({len(frame)} rows about this model)")
        if not found:
            bundle.absent.append(f"{kind}: no table of that stage in the warehouse yet ({', '.join(names)})")


def copy_report_files(bundle: BundleFolder, reports_dir: Path | None, record: lineage.ModelLineage) -> None:
    """Report files of the fairness, drift and change-control stages (this cohort's, without identifiers)."""
    if reports_dir is None or not reports_dir.exists():
        bundle.absent.append("report files: no reports folder")
        return
    copied = 0
    for path in sorted(reports_dir.rglob("*")):
        rel = path.relative_to(reports_dir).as_posix()
        if not path.is_file() or path.suffix not in REPORT_SUFFIXES or "model_cards/" in rel:
            continue
        if not any(k in rel.lower() for k in REPORT_KEYWORDS):
            continue
        parts = rel.split("/")
        if len(parts) > 1 and parts[0] != record.cohort and parts[0] in _cohort_names():
            continue
        if path.stat().st_size > MAX_REPORT_BYTES:
            bundle.absent.append(f"report file {rel}: larger than {MAX_REPORT_BYTES // 2**20} MiB, not copied")
            continue
        if path.suffix != ".png":
            text = path.read_text(encoding="utf-8", errors="replace").lower()
            if any(k in text for k in ("patient_key", "patient_nbr")):
                bundle.absent.append(f"report file {rel}: mentions patient identifiers, not copied")
                continue
        shutil.copyfile(path, bundle.path(f"reports/files/{rel}"))
        copied += 1
    if copied:
        bundle.included.append(f"{copied} report file(s) from the reports folder (fairness, drift, change control, ...)")
    else:
        bundle.absent.append("report files: none of the fairness / drift / change-control stages has written one yet")


def _same_as(path: Path) -> Path | None:
    """The contract a ``same_as`` contract reuses (its version covers both files), else None."""
    import yaml

    named = (yaml.safe_load(path.read_text()) or {}).get("same_as")
    return path.parent / f"{named}.yaml" if isinstance(named, str) else None


def _current_spec(name: str) -> CohortSpec | None:
    try:
        return next((s for s in load_all_cohorts() if s.name == name), None)
    except CohortSpecError:
        return None


def _cohort_names() -> set[str]:
    try:
        return {s.name for s in load_all_cohorts()}
    except CohortSpecError:
        return set()

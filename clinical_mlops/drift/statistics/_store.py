"""Drift results as a time series: ``monitoring.drift_runs`` (one row per comparison) and ``drift_metrics``.

Only aggregates are stored: counts, statistics, means and category shares — never rows or ids.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from clinical_mlops.core.warehouse import table_exists, transaction
from clinical_mlops.drift.statistics._result import DriftResult

__all__ = ["DDL", "Reference", "ReportFile", "ensure_tables", "latest_runs", "store", "top_drifted"]

DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS monitoring",
    """CREATE TABLE IF NOT EXISTS monitoring.drift_runs (
    drift_run_id VARCHAR PRIMARY KEY,
    computed_at TIMESTAMP NOT NULL,         -- UTC
    cohort VARCHAR NOT NULL,
    extract_id VARCHAR NOT NULL,
    reference_kind VARCHAR NOT NULL,        -- champion | latest_candidate | explicit
    reference_model VARCHAR,
    reference_version VARCHAR,
    reference_extracts_json VARCHAR NOT NULL,
    reference_rows BIGINT NOT NULL,
    current_rows BIGINT NOT NULL,
    features_tested INTEGER NOT NULL,
    features_drifted INTEGER NOT NULL,
    features_material INTEGER NOT NULL,
    drift_share DOUBLE NOT NULL,
    dataset_drift BOOLEAN NOT NULL,
    prediction_drift BOOLEAN,
    target_drift BOOLEAN,
    alpha DOUBLE NOT NULL,
    correction VARCHAR NOT NULL,
    psi_threshold DOUBLE NOT NULL,
    dataset_drift_share DOUBLE NOT NULL,
    severity VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL,
    report_path VARCHAR,
    report_sha256 VARCHAR,
    report_sample_rows BIGINT,
    report_sample_seed BIGINT,
    details_json VARCHAR
)""",
    """CREATE TABLE IF NOT EXISTS monitoring.drift_metrics (
    drift_run_id VARCHAR NOT NULL,
    computed_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    extract_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,                  -- feature | prediction | target
    feature VARCHAR NOT NULL,
    feature_type VARCHAR NOT NULL,          -- numeric | categorical
    test VARCHAR NOT NULL,                  -- ks | chi_square
    statistic DOUBLE,
    p_value DOUBLE,
    p_value_adjusted DOUBLE,
    psi DOUBLE,
    significant BOOLEAN NOT NULL,
    drifted BOOLEAN NOT NULL,
    material BOOLEAN NOT NULL,              -- psi >= psi_threshold
    n_reference BIGINT NOT NULL,
    n_current BIGINT NOT NULL,
    reference_value DOUBLE,
    current_value DOUBLE,
    summary VARCHAR
)""",
)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


@dataclass(frozen=True)
class Reference:
    """What the current extract was compared against."""

    kind: str  # champion | latest_candidate | explicit
    model_name: str | None
    model_version: str | None
    extracts: tuple[str, ...]


@dataclass(frozen=True)
class ReportFile:
    path: str
    sha256: str
    sample_rows: int
    sample_seed: int


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def store(
    con: duckdb.DuckDBPyConnection,
    result: DriftResult,
    *,
    cohort: str,
    extract_id: str,
    reference: Reference,
    policy_sha256: str,
    report: ReportFile | None = None,
    details: dict | None = None,
) -> str:
    """Append one comparison to ``monitoring.drift_runs`` / ``drift_metrics``; return its id."""
    ensure_tables(con)
    run_id = uuid.uuid4().hex
    now = datetime.now(UTC).replace(tzinfo=None)
    s = result.settings
    rows = [*result.features, *(x for x in (result.prediction, result.target) if x is not None)]
    with transaction(con):
        con.execute(
            "INSERT INTO monitoring.drift_runs VALUES (" + ", ".join(["?"] * 28) + ")",
            [
                run_id, now, cohort, extract_id, reference.kind, reference.model_name, reference.model_version,
                json.dumps(list(reference.extracts)), result.n_reference, result.n_current,
                result.features_tested, len(result.drifted_features), len(result.material_features),
                result.drift_share, result.dataset_drift,
                None if result.prediction is None else result.prediction_drift,
                None if result.target is None else result.target_drift,
                s.alpha, s.correction, s.psi_threshold, s.dataset_drift_share, s.severity, policy_sha256,
                None if report is None else report.path, None if report is None else report.sha256,
                None if report is None else report.sample_rows, None if report is None else report.sample_seed,
                json.dumps(details or {}, sort_keys=True, default=str),
            ],
        )
        con.executemany(
            "INSERT INTO monitoring.drift_metrics VALUES (" + ", ".join(["?"] * 20) + ")",
            [
                [run_id, now, cohort, extract_id, f.kind, f.name, f.feature_type, f.test, _nan_to_none(f.statistic),
                 _nan_to_none(f.p_value), _nan_to_none(f.p_value_adjusted), _nan_to_none(f.psi), f.significant,
                 f.drifted, f.material, f.n_reference, f.n_current, _nan_to_none(f.reference_value),
                 _nan_to_none(f.current_value), f.summary]
                for f in rows
            ],
        )
    return run_id


def latest_runs(con: duckdb.DuckDBPyConnection, cohort: str) -> list[dict]:
    """The most recent drift comparison of each extract of a cohort, newest first ([] if none)."""
    if not table_exists(con, "monitoring.drift_runs"):
        return []
    cursor = con.execute(
        """SELECT * FROM monitoring.drift_runs WHERE cohort = ?
           QUALIFY row_number() OVER (PARTITION BY extract_id ORDER BY computed_at DESC) = 1
           ORDER BY computed_at DESC""",
        [cohort],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def top_drifted(con: duckdb.DuckDBPyConnection, drift_run_id: str, limit: int = 5) -> list[dict]:
    """The most shifted features of one stored comparison (drifted first, then by PSI)."""
    cursor = con.execute(
        """SELECT feature, test, statistic, p_value_adjusted, psi, drifted, material, summary
           FROM monitoring.drift_metrics WHERE drift_run_id = ? AND kind = 'feature'
           ORDER BY drifted DESC, psi DESC NULLS LAST LIMIT ?""",
        [drift_run_id, limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]

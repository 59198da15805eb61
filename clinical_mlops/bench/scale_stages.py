"""The data stages as plain functions over a workspace, for benchmarks and ``clinical-mlops bench``.

A workspace is a folder holding ``landing/`` (extract CSVs), ``warehouse.duckdb`` and
``mlflow/``. Each function runs one stage end to end with bounded memory (DuckDB capped by
:func:`clinical_mlops.core.chunking.bound_memory`, spilling to ``<workspace>/duckdb_tmp``) and
returns a small dict of counts; none holds patient data. No Dagster import: the assets in
``defs/`` wire the same library functions.

``clinical-mlops bench`` (:mod:`clinical_mlops.bench.scale`) runs each stage in its own
process, so its peak RSS is its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from clinical_mlops.core import chunking, warehouse
from clinical_mlops.features import build as features
from clinical_mlops.ingestion import landing
from clinical_mlops.validation import rules as validation
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.ingestion.synthetic import SubgroupBias, SyntheticConfig, write_synthetic_extracts

BENCH_PSEUDONYM_KEY = b"bench-key-not-secret"
DEFAULT_MAX_TRAINING_ROWS = 1_000_000  # = training.DEFAULT_MAX_TRAINING_ROWS (MLflow imported lazily)
DEFAULT_SUBSAMPLE_SEED = 20240601
DEFAULT_COHORT = "readmission_30d"


def _landing(workspace: Path) -> Path:
    return Path(workspace) / "landing"


def _connect(
    workspace: Path, memory_limit: str | None, *, preserve_insertion_order: bool = False
) -> duckdb.DuckDBPyConnection:
    con = warehouse.connect(Path(workspace) / "warehouse.duckdb")
    temp = Path(workspace) / "duckdb_tmp"
    temp.mkdir(parents=True, exist_ok=True)
    chunking.bound_memory(
        con, memory_limit=memory_limit, temp_directory=temp, preserve_insertion_order=preserve_insertion_order
    )
    return con


def generate(
    workspace: Path, *, n_encounters: int, rows_per_extract: int = 1_000_000, seed: int = 42,
    bias: bool = True, chunk_rows: int = 250_000,
) -> dict[str, Any]:
    """Write ``n_encounters`` synthetic encounters as extract CSVs in ``<workspace>/landing``."""
    config = SyntheticConfig(
        n_encounters=n_encounters, seed=seed,
        bias=SubgroupBias(utilisation_undercount_rate=0.5) if bias else None,
    )
    paths = write_synthetic_extracts(
        config, _landing(workspace), rows_per_extract=rows_per_extract, chunk_rows=chunk_rows
    )
    return {"rows": n_encounters, "extracts": len(paths), "bytes": sum(p.stat().st_size for p in paths)}


def land(workspace: Path, *, memory_limit: str | None = None) -> dict[str, Any]:
    """Land every extract of the workspace's landing zone into ``raw`` (landing.land_extract)."""
    con = _connect(workspace, memory_limit, preserve_insertion_order=True)  # row numbers follow file lines
    try:
        results = [landing.land_extract(con, path) for path in landing.list_extracts(_landing(workspace))]
    finally:
        con.close()
    return {
        "rows": sum(r.rows_landed for r in results), "extracts": len(results),
        "rejected": sum(r.status == "rejected" for r in results),
    }


def validate(
    workspace: Path, *, chunk_rows: int = chunking.DEFAULT_CHUNK_ROWS, engine: str = "sql",
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Validate every landed extract, in arrival order, into ``staging``."""
    con = _connect(workspace, memory_limit)
    try:
        extract_ids = [
            row[0] for row in con.execute(
                "SELECT extract_id FROM raw.extracts WHERE status = 'landed' ORDER BY extract_id"
            ).fetchall()
        ]
        outcomes = [
            validation.validate_extract(
                con, extract_id, pseudonym_key=BENCH_PSEUDONYM_KEY, chunk_rows=chunk_rows, engine=engine
            )
            for extract_id in extract_ids
        ]
    finally:
        con.close()
    return {
        "rows": sum(o.rows_landed for o in outcomes),
        "rows_valid": sum(o.rows_valid for o in outcomes),
        "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
        "reconciles": all(o.reconciles for o in outcomes),
    }


def build_features(
    workspace: Path, *, cohort: str = DEFAULT_COHORT, chunk_rows: int = chunking.DEFAULT_CHUNK_ROWS,
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Build ``features.<cohort>`` in SQL and check it against the Pandera feature schema in chunks."""
    spec = load_cohort(cohort)
    con = _connect(workspace, memory_limit)
    try:
        started = time.perf_counter()
        build = features.build_features(con, spec)
        built = time.perf_counter() - started
        check = features.check_feature_schema(con, spec, chunk_rows=chunk_rows)
    finally:
        con.close()
    return {
        "rows": build.rows_in, "rows_out": build.rows_out, "schema_failures": sum(check.failures.values()),
        "rows_checked": check.rows_checked, "build_seconds": round(built, 2),
    }


def split(workspace: Path, *, cohort: str = DEFAULT_COHORT, memory_limit: str | None = None) -> dict[str, Any]:
    """Assign the patient-grouped split and hash both id sets."""
    spec = load_cohort(cohort)
    con = _connect(workspace, memory_limit)
    try:
        summary = features.assign_split(con, spec)
    finally:
        con.close()
    return {
        "rows": summary.train_rows + summary.test_rows, "train_rows": summary.train_rows,
        "test_rows": summary.test_rows, "patient_overlap": summary.patient_overlap,
    }


def train(
    workspace: Path, *, cohort: str = DEFAULT_COHORT, roles: tuple[str, ...] = ("baseline", "candidate"),
    max_training_rows: int = DEFAULT_MAX_TRAINING_ROWS,
    subsample_seed: int = DEFAULT_SUBSAMPLE_SEED,
    chunk_rows: int = chunking.DEFAULT_CHUNK_ROWS, memory_limit: str | None = None,
) -> dict[str, Any]:
    """Fit, register and score the cohort's models (training rows capped, test scored whole)."""
    from clinical_mlops.training import modelling, fit as training  # MLflow and scikit-learn: only this stage needs them

    spec = load_cohort(cohort)
    root = Path(workspace) / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    builders: dict[str, Callable[[], tuple[Any, dict]]] = {
        "baseline": lambda: (
            modelling.build_logistic_regression(spec, modelling.LogisticRegressionParams()),
            modelling.LogisticRegressionParams().as_dict(),
        ),
        "candidate": lambda: (
            modelling.build_gradient_boosting(spec, modelling.GradientBoostingParams()),
            modelling.GradientBoostingParams().as_dict(),
        ),
    }
    con = _connect(workspace, memory_limit)
    result: dict[str, Any] = {}
    try:
        for role in roles:
            pipeline, params = builders[role]()
            started = time.perf_counter()
            outcome = training.train_and_register(
                con, spec, role=role, pipeline=pipeline, params=params,
                tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=root / "artifacts",
                max_training_rows=max_training_rows, subsample_seed=subsample_seed, chunk_rows=chunk_rows,
            )
            result[role] = {
                "seconds": round(time.perf_counter() - started, 2), "train_rows_used": outcome.train_rows_used,
                "test_auroc": round(outcome.test_auroc, 4),
            }
            result["rows"] = outcome.train_rows + outcome.test_rows
            result["train_rows_used"] = outcome.train_rows_used
            result["test_rows_scored"] = outcome.test_rows
    finally:
        con.close()
    return result

"""The ML stages that must run at scale, as plain functions (no Dagster): one call per stage.

Each function takes an open DuckDB warehouse connection and returns a JSON-ready dict of counts
and aggregates (never rows). They are what the Dagster assets compute, minus the orchestration,
so ``clinical-mlops bench`` (:mod:`clinical_mlops.bench.scale`) can time them one per process:

* :func:`drift_statistics` — one extract against the reference population: per-feature KS /
  chi-square / PSI in DuckDB, target drift, and prediction drift scored in chunks;
* :func:`fairness_aggregates` — the policy audit of a model's test predictions (binned
  bootstrap above ``fairness.EXACT_MAX_ROWS``);
* :func:`evaluation` — metrics with CIs overall and per group (binned bootstrap above
  ``evaluation.EXACT_MAX_ROWS``), stored in ``ml.evaluation_metrics``;
* :func:`batch_scoring` — one extract scored in chunks into ``ml.batch_predictions``.

Memory: DuckDB's own default limit is 80% of the machine's RAM; :func:`limit_memory` caps it
(and its threads) for a shared machine, and spills to disk beyond the cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.drift import statistics as drift
from clinical_mlops.fairness import audit as fairness
from clinical_mlops.evaluation import models as model_evaluation
from clinical_mlops.scoring import champion as scoring
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy

__all__ = ["batch_scoring", "drift_statistics", "evaluation", "fairness_aggregates", "limit_memory"]


def limit_memory(con: duckdb.DuckDBPyConnection, *, memory_limit: str = "3GB", threads: int = 2) -> None:
    """Cap DuckDB's buffer memory (it spills to its temp directory beyond) and its threads."""
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")


def _model_row(con: duckdb.DuckDBPyConnection, spec: CohortSpec, role: str = "candidate") -> dict:
    row = drift.model_record(con, f"{spec.name}_{role}", None)
    if row is None:
        raise LookupError(f"no {role} model recorded for {spec.name} in ml.model_versions")
    return row


def drift_statistics(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    extract_id: str,
    *,
    policy: Policy,
    predict: Callable[[pd.DataFrame], np.ndarray] | None = None,
    html_path: Path | None = None,
) -> dict:
    """Drift of one extract against the reference model's training rows; stored in monitoring.*.

    ``predict`` (rows -> risk scores) enables prediction drift against the reference model's test
    scores; the extract is scored in chunks. ``html_path`` renders the Evidently report on the
    policy's seeded sample.
    """
    from clinical_mlops.drift import report as drift_report

    settings = drift.DriftSettings.from_policy(policy.drift)
    model_name = f"{spec.name}_candidate"
    categorical = list(dict.fromkeys([*spec.categorical_features, *spec.sensitive_attributes]))
    numeric = list(spec.numeric_features)
    columns = [*numeric, *categorical, "label"]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    reference, reference_sql, reference_params = drift.select_reference(con, spec.name, spec.features_table,
                                                                        extract_id, model_name)
    current_sql, current_params = drift.current_population(spec.features_table, extract_id)
    n_ref, n_cur = drift.stage_populations(con, reference_sql, current_sql, columns,
                                           reference_params=reference_params, current_params=current_params,
                                           unit="patient_key", order_key="encounter_id")
    if n_ref == 0 or n_cur == 0:
        raise ValueError(f"drift needs both populations (reference {n_ref} rows, current {n_cur})")
    timings["stage_seconds"] = time.perf_counter() - started
    result = drift.compare(con, numeric=numeric, categorical=categorical, settings=settings, label="label")
    timings["statistics_seconds"] = time.perf_counter() - started
    if predict is not None and reference.model_version is not None:
        t0 = time.perf_counter()
        reference_scores = con.execute(
            "SELECT score FROM ml.predictions WHERE model_name = ? AND model_version = ? AND split = 'test'",
            [model_name, reference.model_version]).fetchnumpy()["score"]
        threshold = drift.model_record(con, model_name, reference.model_version)["operating_threshold"]
        current_scores = drift.scores_in_chunks(con, current_sql, current_params, predict)
        prediction, rates = drift.score_drift(reference_scores, current_scores, threshold=float(threshold),
                                              settings=settings)
        result = drift.with_prediction(result, prediction, rates)
        timings["prediction_seconds"] = time.perf_counter() - t0
    report = None
    if html_path is not None:
        t0 = time.perf_counter()
        sample = drift_report.sampled_frames(con, drift.STAGE_TABLE, columns, sample_rows=settings.sample_rows,
                                             seed=settings.sample_seed)
        html = drift_report.render_html(sample.reference, sample.current, numeric=numeric,
                                        categorical=[*categorical, "label"], path=html_path,
                                        drift_share=settings.dataset_drift_share)
        report = drift.ReportFile(str(html_path), html.sha256, settings.sample_rows, settings.sample_seed)
        timings["evidently_seconds"] = time.perf_counter() - t0
    run_id = drift.store(con, result, cohort=spec.name, extract_id=extract_id, reference=reference,
                         policy_sha256=policy.sha256, report=report,
                         details={k: round(v, 3) for k, v in timings.items()})
    con.execute(f"DROP TABLE IF EXISTS {drift.STAGE_TABLE}")
    return {
        "stage": "drift_statistics", "rows": n_ref + n_cur, "reference_rows": n_ref, "current_rows": n_cur,
        "features_tested": result.features_tested, "features_drifted": len(result.drifted_features),
        "dataset_drift": result.dataset_drift, "prediction_drift": None if result.prediction is None
        else result.prediction_drift, "drift_run_id": run_id, **{k: round(v, 2) for k, v in timings.items()},
    }


def fairness_aggregates(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    policy: Policy,
    n_bootstrap: int | None = None,
    exact_max_rows: int = fairness.EXACT_MAX_ROWS,
    store: bool = True,
) -> dict:
    """The fairness audit of the latest candidate's test predictions, stored in monitoring.fairness_*."""
    model = _model_row(con, spec)
    result, audit_id = fairness.audit_model(con, cohort=spec.name, features_table=spec.features_table, model=model,
                                            policy=policy, n_bootstrap=n_bootstrap, store=store,
                                            exact_max_rows=exact_max_rows)
    return {
        "stage": "fairness_aggregates", "rows": result.n, "groups": int(result.groups[["slice", "group"]]
                                                                         .drop_duplicates().shape[0]),
        "verdicts": result.verdict_counts, "blocking_failed": result.blocking_failed,
        "bootstrap": {"method": result.bootstrap_method, "replicates": result.n_bootstrap,
                      "exact_max_rows": result.exact_max_rows, "score_bins": result.score_bins},
        "audit_id": audit_id,
    }


def evaluation(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    n_boot: int = 200,
    seed: int = 11,
    min_group_size: int = 100,
    exact_max_rows: int = 250_000,
    plots: bool = True,
) -> dict:
    """Evaluation of the latest candidate on its test predictions, stored in ml.evaluation_metrics."""
    model = _model_row(con, spec)
    result = model_evaluation.evaluate_model(
        con, spec, model_name=str(model["model_name"]), model_version=str(model["model_version"]),
        threshold=float(model["operating_threshold"]), n_boot=n_boot, seed=seed, min_group_size=min_group_size,
        exact_max_rows=exact_max_rows, plots=plots,
    )
    auroc = result.overall("auroc")
    return {
        "stage": "evaluation", "rows": int(result.bootstrap["rows"]), "bootstrap": result.bootstrap,
        "auroc": round(auroc.estimate, 4), "auroc_ci": [round(auroc.lower, 4), round(auroc.upper, 4)],
        "plots": len(result.plots),
    }


def batch_scoring(
    con: duckdb.DuckDBPyConnection,
    model: scoring.ScoringModel,
    extract_id: str,
    *,
    chunk_rows: int = scoring.CHUNK_ROWS,
) -> dict:
    """One extract scored in chunks into ml.batch_predictions (with per-row provenance)."""
    summary = scoring.score_extract(con, model, extract_id, chunk_rows=chunk_rows)
    return {
        "stage": "batch_scoring", "rows": summary.rows_scored, "rows_excluded": summary.rows_excluded,
        "rows_flagged": summary.rows_flagged, "mean_score": round(summary.mean_score, 5),
        "scores_sha256": summary.scores_sha256, "chunk_rows": chunk_rows,
    }

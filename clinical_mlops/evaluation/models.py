"""Evaluate registered models on the held-out split, overall and per sensitive attribute.

Reads test predictions from ``ml.predictions`` (written at fit time) and the sensitive
attributes from the cohort's feature table, computes metrics with bootstrap confidence
intervals, and appends them to ``ml.evaluation_metrics`` as a time series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pandas as pd

from clinical_mlops.core import bootstrap
from clinical_mlops.core.warehouse import insert_frame
from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.features.cohort import CohortSpec

__all__ = ["ModelEvaluation", "evaluate_model", "test_predictions"]


@dataclass(frozen=True)
class ModelEvaluation:
    model_name: str
    model_version: str
    threshold: float
    table: pd.DataFrame  # attribute, group, n, n_positive, metric, estimate, lower, upper
    plots: dict[str, bytes]
    bootstrap: dict = field(default_factory=dict)
    """How the intervals were computed: method (rows | binned), rows, replicates, cap, score bins."""

    def overall(self, metric: str) -> evaluation.MetricEstimate:
        row = self.table[(self.table["attribute"] == "overall") & (self.table["metric"] == metric)].iloc[0]
        return evaluation.MetricEstimate(metric, float(row["estimate"]), float(row["lower"]), float(row["upper"]))


def test_predictions(con: duckdb.DuckDBPyConnection, spec: CohortSpec, model_name: str, version: str) -> pd.DataFrame:
    """Test-split scores and labels of one model version with the sensitive attributes."""
    attributes = ", ".join(f"f.{a}" for a in spec.sensitive_attributes)
    return con.execute(
        f"""SELECT p.encounter_id, p.label, p.score, {attributes}
            FROM ml.predictions p JOIN {spec.features_table} f USING (encounter_id)
            WHERE p.model_name = ? AND p.model_version = ? AND p.split = 'test'
            ORDER BY p.encounter_id""",
        [model_name, version],
    ).df()


def evaluate_model(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    model_name: str,
    model_version: str,
    threshold: float,
    n_boot: int,
    seed: int,
    min_group_size: int,
    exact_max_rows: int = evaluation.EXACT_MAX_ROWS,
    plots: bool = True,
) -> ModelEvaluation:
    """Metrics with CIs overall and per group, ROC and calibration plots; stored in the warehouse.

    The test rows are fetched as numbers (labels, scores, group codes), never as a frame of
    strings; above ``exact_max_rows`` rows the bootstrap is binned (recorded in ``bootstrap``).
    """
    attributes = list(spec.sensitive_attributes)
    cols = "".join(f", f.{a}" for a in attributes)
    source = (f"SELECT p.encounter_id, p.label, p.score{cols} FROM ml.predictions p "
              f"JOIN {spec.features_table} f USING (encounter_id) "
              "WHERE p.model_name = ? AND p.model_version = ? AND p.split = 'test'")
    y, score, coded = bootstrap.coded_predictions(con, source, [model_name, model_version], attributes,
                                                  missing=None)
    if y.size == 0:
        raise ValueError(f"no test predictions for {model_name} version {model_version}")
    groups = {a: pd.Categorical.from_codes(codes, categories=labels) for a, (codes, labels) in coded.items()}
    table = evaluation.metrics_by_group(
        y, score, groups, threshold=threshold, n_boot=n_boot, seed=seed, min_group_size=min_group_size,
        exact_max_rows=exact_max_rows,
    )
    description = evaluation.bootstrap_description(int(y.size), n_boot=n_boot, exact_max_rows=exact_max_rows)
    title = f"{model_name} v{model_version}"
    images = {
        "roc": evaluation.plot_roc(y, score, f"ROC — {title}"),
        "calibration": evaluation.plot_calibration(y, score, f"Calibration — {title}"),
        **{
            f"roc_by_{a}": evaluation.plot_roc_by_group(y, score, groups[a], f"ROC by {a} — {title}")
            for a in spec.sensitive_attributes
        },
    } if plots else {}
    now = datetime.now(UTC).replace(tzinfo=None)
    stored = table.assign(evaluated_at=now, cohort=spec.name, model_name=model_name, model_version=model_version)
    stored = stored[["evaluated_at", "cohort", "model_name", "model_version", "attribute", "group", "n",
                     "n_positive", "metric", "estimate", "lower", "upper"]]
    insert_frame(con, "ml.evaluation_metrics", stored, view="evaluation_rows")
    return ModelEvaluation(model_name, model_version, threshold, table, images, description)

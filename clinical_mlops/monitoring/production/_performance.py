"""Performance over time on labelled production predictions, with bootstrap intervals, and its verdict."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core import evidence
from clinical_mlops.core.warehouse import insert_frame, table_exists
from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import settings
from clinical_mlops.monitoring.production._outcomes import labelled_predictions, no_labels_reason
from clinical_mlops.monitoring.production._tables import ensure_tables, utc_now

__all__ = [
    "REPORTED_METRICS",
    "PerformanceSummary",
    "heldout_auroc",
    "latest_threshold",
    "performance_over_time",
    "plot_over_time",
]

REPORTED_METRICS = ("auroc", "auprc", "brier", "ece", "tpr", "precision", "selection_rate", "prevalence")


@dataclass(frozen=True)
class PerformanceSummary:
    table: pd.DataFrame              # period_start, model_version, n, n_positive, metric, estimate, lower, upper
    current_model: tuple[str, str] | None
    window: dict[str, evaluation.MetricEstimate]
    window_n: int
    window_positives: int
    heldout_auroc: float | None
    verdict: evidence.Status         # pass | fail | insufficient_evidence
    reason: str

    @property
    def evidence(self) -> evidence.Evidence:
        return evidence.Evidence(self.verdict, self.reason)


def heldout_auroc(con: duckdb.DuckDBPyConnection, model_name: str, model_version: str) -> float | None:
    """The model's AUROC on its held-out test split (latest evaluation), if recorded."""
    if not table_exists(con, "ml.evaluation_metrics"):
        return None
    rows = con.execute(
        """SELECT estimate FROM ml.evaluation_metrics
           WHERE model_name = ? AND model_version = ? AND metric = 'auroc' AND attribute = 'overall'
           ORDER BY evaluated_at DESC LIMIT 1""",
        [model_name, str(model_version)],
    ).fetchall()
    if rows and rows[0][0] is not None:
        return float(rows[0][0])
    rows = con.execute(
        "SELECT label, score FROM ml.predictions WHERE model_name = ? AND model_version = ? AND split = 'test'",
        [model_name, str(model_version)],
    ).fetchall()
    if not rows:
        return None
    y = np.array([r[0] for r in rows])
    if y.min() == y.max():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.array([r[1] for r in rows])))


def _estimates(frame: pd.DataFrame, threshold: float, n_boot: int, seed: int) -> dict[str, evaluation.MetricEstimate]:
    return evaluation.bootstrap_metrics(
        frame["label"].to_numpy(), frame["score"].to_numpy(), threshold=threshold, n_boot=n_boot, seed=seed,
    )


def performance_over_time(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    period: str = settings.PERFORMANCE_PERIOD,
    window_days: float = settings.PRODUCTION_WINDOW_DAYS,
    min_labelled: int = settings.MIN_LABELLED,
    auroc_tolerance: float = settings.AUROC_TOLERANCE,
    n_boot: int = settings.PERFORMANCE_N_BOOTSTRAP,
    seed: int = 13,
    now: datetime | None = None,
    store: bool = True,
) -> PerformanceSummary:
    """Metrics with CIs per period and model version; the verdict judges the current model's window.

    The current model is the version that made the most recent labelled prediction. The verdict is
    the offline gate's rule (:func:`clinical_mlops.core.evidence.at_least`) on the window's AUROC
    interval against the held-out AUROC minus the tolerance: ``pass`` only when the whole interval
    clears it, ``fail`` when the whole interval lies below, else ``insufficient_evidence`` — as it
    is with no labelled outcome in the window, fewer than ``min_labelled``, or one class.
    """
    if period not in ("day", "week", "month"):
        raise ValueError("period must be day, week or month")
    now = now or utc_now()
    frame = labelled_predictions(con, spec.name, attributes=tuple(spec.sensitive_attributes))
    rows = []
    if not frame.empty:
        frame["period_start"] = frame["predicted_at"].dt.to_period({"day": "D", "week": "W-MON", "month": "M"}[period]
                                                                  ).dt.start_time
        for (start, name, version), part in frame.groupby(["period_start", "model_name", "model_version"], sort=True):
            threshold = latest_threshold(part)
            estimates = _estimates(part, threshold, n_boot if len(part) >= 30 else 0, seed)
            for metric in REPORTED_METRICS:
                e = estimates[metric]
                rows.append((start, period, name, version, len(part), int(part["label"].sum()), metric,
                             e.estimate, e.lower, e.upper))
    current = None
    window: dict[str, evaluation.MetricEstimate] = {}
    window_n = window_pos = 0
    reference = None
    verdict, reason = evidence.INSUFFICIENT, no_labels_reason(window_days)
    if not frame.empty:
        last = frame.iloc[-1]
        current = (str(last["model_name"]), str(last["model_version"]))
        part = frame[(frame["model_name"] == current[0]) & (frame["model_version"] == current[1])
                     & (frame["predicted_at"] >= now - timedelta(days=window_days))]
        window_n, window_pos = len(part), int(part["label"].sum()) if len(part) else 0
        reference = heldout_auroc(con, *current)
        if window_n:
            window = _estimates(part, latest_threshold(part), n_boot, seed)
            for metric in REPORTED_METRICS:
                e = window[metric]
                rows.append((now - timedelta(days=window_days), "window", current[0], current[1], window_n, window_pos,
                             metric, e.estimate, e.lower, e.upper))
        verdict, reason = _performance_verdict(window, window_n, window_pos, reference, min_labelled, auroc_tolerance,
                                               window_days)
    table = pd.DataFrame(rows, columns=["period_start", "period", "model_name", "model_version", "n", "n_positive",
                                        "metric", "estimate", "lower", "upper"])
    if store and not table.empty:
        ensure_tables(con)
        stored = table.assign(computed_at=now, cohort=spec.name)
        insert_frame(con, "monitoring.production_metrics", stored, view="production_metric_rows")
    return PerformanceSummary(table, current, window, window_n, window_pos, reference, verdict, reason)


def latest_threshold(frame: pd.DataFrame) -> float:
    """The most recent operating threshold recorded with the predictions (0.5 when none was)."""
    values = frame["operating_threshold"].dropna()
    return float(values.iloc[-1]) if len(values) else 0.5


def _performance_verdict(window, n, positives, reference, min_labelled, tolerance,
                         window_days) -> tuple[evidence.Status, str]:
    if n == 0:
        return evidence.INSUFFICIENT, no_labels_reason(window_days)
    if n < min_labelled:
        return evidence.INSUFFICIENT, f"{n} labelled outcomes in the window (need {min_labelled})"
    if positives == 0 or positives == n:
        return evidence.INSUFFICIENT, "the window holds a single outcome class"
    auroc = window.get("auroc")
    if auroc is None or math.isnan(auroc.estimate):
        return evidence.INSUFFICIENT, "AUROC undefined in the window"
    if reference is None:
        return evidence.INSUFFICIENT, "no held-out AUROC recorded for the model"
    floor = reference - tolerance
    judged = evidence.at_least(auroc.lower, auroc.upper, floor, what=f"production AUROC {auroc.estimate:.3f}")
    return judged.status, f"{judged.reason} (the held-out {reference:.3f} minus tolerance {tolerance:g})"


def plot_over_time(table: pd.DataFrame, metric: str, *, title: str) -> bytes:
    """PNG of one metric per period and model version, with its interval."""
    from matplotlib.figure import Figure

    rows = table[(table["metric"] == metric) & (table["period"] != "window")].sort_values("period_start")
    fig = Figure(figsize=(6.4, 3.2), dpi=100)
    ax = fig.add_subplot()
    for (name, version), part in rows.groupby(["model_name", "model_version"], sort=True):
        ax.plot(part["period_start"], part["estimate"], marker="o", label=f"{name} v{version}")
        ax.fill_between(part["period_start"], part["lower"], part["upper"], alpha=0.2)
    ax.set_title(title)
    ax.set_ylabel(metric)
    if not rows.empty:
        ax.legend(fontsize="small")
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()

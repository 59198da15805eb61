"""Metrics with bootstrap CIs, overall and per subgroup, through the project's one bootstrap kernel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clinical_mlops.core import bootstrap
from clinical_mlops.evaluation.metrics._inputs import group_labels, inputs
from clinical_mlops.evaluation.settings import EXACT_MAX_ROWS

__all__ = [
    "EXACT_MAX_ROWS",
    "METRICS",
    "OVERALL_ATTRIBUTE",
    "OVERALL_GROUP",
    "MetricEstimate",
    "bootstrap_description",
    "bootstrap_metrics",
    "metrics_by_group",
]

METRICS: tuple[str, ...] = (
    "auroc",
    "auprc",
    "brier",
    "ece",
    "calibration_in_the_large",
    "prevalence",
    "selection_rate",
    "tpr",
    "fpr",
    "precision",
)
"""Metric names, in the order they are reported."""

_COLUMNS = [bootstrap.METRICS.index(m) for m in METRICS]

OVERALL_ATTRIBUTE = "overall"
OVERALL_GROUP = "all"

_TABLE_COLUMNS = ["attribute", "group", "n", "n_positive", "metric", "estimate", "lower", "upper"]


@dataclass(frozen=True)
class MetricEstimate:
    """A point estimate with a bootstrap percentile interval (NaN where undefined)."""

    metric: str
    estimate: float
    lower: float
    upper: float


def _bootstrap(y: np.ndarray, s: np.ndarray, partitions: list[tuple[np.ndarray, int]], *, threshold: float,
               n_boot: int, seed: int, min_group_size: int, weights_dtype: type | np.dtype, exact_max_rows: int,
               score_bins: int) -> list[bootstrap.GroupBootstrap]:
    # The row draws go to the rows in descending-score order, as they always have: the same
    # seed keeps giving the intervals recorded before the kernel was shared.
    return bootstrap.group_bootstrap(
        y, s, partitions, threshold=threshold, n_boot=n_boot, seed=seed, exact_max_rows=exact_max_rows,
        score_bins=score_bins, min_group_size=min_group_size, weights_dtype=weights_dtype,
        draw_order=np.argsort(-s, kind="stable"),
    )


def _estimates(result: bootstrap.GroupBootstrap, g: int, lo: np.ndarray, hi: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate, lower and upper of ``METRICS`` for group ``g``; no interval where the estimate is undefined."""
    est = result.estimate[g, _COLUMNS]
    undefined = np.isnan(est)
    return est, np.where(undefined, np.nan, lo[g, _COLUMNS]), np.where(undefined, np.nan, hi[g, _COLUMNS])


def bootstrap_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    threshold: float,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    weights_dtype: type | np.dtype = np.float32,
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = bootstrap.DEFAULT_BINS,
) -> dict[str, MetricEstimate]:
    """Point estimates and bootstrap percentile CIs for every metric in ``METRICS``.

    ``score >= threshold`` counts as a positive prediction. Deterministic for a given seed.
    Above ``exact_max_rows`` rows the bootstrap is binned (the overall rows of ``metrics_by_group``).
    """
    bootstrap.check_arguments(n_boot, confidence)
    y, s = inputs(y_true, y_score)
    (result,) = _bootstrap(y, s, [(np.zeros(y.shape[0], dtype=np.int64), 1)], threshold=threshold, n_boot=n_boot,
                           seed=seed, min_group_size=1, weights_dtype=weights_dtype, exact_max_rows=exact_max_rows,
                           score_bins=score_bins)
    est, lo, hi = _estimates(result, 0, *result.interval(confidence))
    return {name: MetricEstimate(name, float(est[k]), float(lo[k]), float(hi[k])) for k, name in enumerate(METRICS)}


def metrics_by_group(
    y_true: np.ndarray,
    y_score: np.ndarray,
    groups: Mapping[str, np.ndarray | pd.Series],
    *,
    threshold: float,
    n_boot: int = 200,
    seed: int = 0,
    min_group_size: int = 1,
    confidence: float = 0.95,
    weights_dtype: type | np.dtype = np.float32,
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = bootstrap.DEFAULT_BINS,
) -> pd.DataFrame:
    """Long table of metrics overall and per subgroup, one row per (attribute, group, metric).

    Columns: attribute, group, n, n_positive, metric, estimate, lower, upper. The overall rows
    have attribute ``"overall"`` and group ``"all"`` and equal ``bootstrap_metrics`` for the
    same seed. Groups are matched to rows by position; missing group values form a
    ``"missing"`` group; groups with no rows are left out. Groups (and the overall set) smaller
    than ``min_group_size`` get point estimates but NaN intervals.

    Subgroups reuse the cohort-level replicates restricted to the group's rows, so the group
    size varies across replicates like it would in a new sample of patients (above
    ``exact_max_rows``, each attribute's cells are drawn once for all its groups).
    """
    bootstrap.check_arguments(n_boot, confidence)
    if OVERALL_ATTRIBUTE in groups:
        raise ValueError(f"{OVERALL_ATTRIBUTE!r} is reserved for the whole-cohort rows")
    y, s = inputs(y_true, y_score)
    n = y.shape[0]
    attributes: list[tuple[str, np.ndarray, list[str]]] = [
        (OVERALL_ATTRIBUTE, np.zeros(n, dtype=np.int64), [OVERALL_GROUP])]
    for attribute, values in groups.items():
        codes, labels = group_labels(values, n, attribute)
        attributes.append((str(attribute), codes, labels))
    results = _bootstrap(y, s, [(codes, len(labels)) for _, codes, labels in attributes], threshold=threshold,
                         n_boot=n_boot, seed=seed, min_group_size=min_group_size, weights_dtype=weights_dtype,
                         exact_max_rows=exact_max_rows, score_bins=score_bins)
    frames = []
    for (attribute, _, labels), result in zip(attributes, results):
        lo, hi = result.interval(confidence)
        for g, label in enumerate(labels):
            if result.n[g] == 0:
                continue
            est, lower, upper = _estimates(result, g, lo, hi)
            frames.append(pd.DataFrame({
                "attribute": attribute, "group": label, "n": int(result.n[g]), "n_positive": int(result.n_positive[g]),
                "metric": list(METRICS), "estimate": est, "lower": lower, "upper": upper,
            }))
    table = pd.concat(frames, ignore_index=True)[_TABLE_COLUMNS]
    return table.astype({"n": "int64", "n_positive": "int64"})


def bootstrap_description(n: int, *, n_boot: int, exact_max_rows: int = EXACT_MAX_ROWS,
                          score_bins: int = bootstrap.DEFAULT_BINS) -> dict[str, object]:
    """How the intervals of an evaluation of ``n`` rows were computed (for metadata and reports)."""
    method = bootstrap.method_for(n, exact_max_rows)
    return {"method": method, "rows": int(n), "replicates": int(n_boot), "exact_max_rows": int(exact_max_rows),
            "score_bins": int(score_bins) if method == "binned" else None}

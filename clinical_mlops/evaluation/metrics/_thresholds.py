"""Operating thresholds, alert rates and the reliability table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clinical_mlops.core.bootstrap import calibration_bin
from clinical_mlops.evaluation.metrics._inputs import as_labels, as_scores, inputs

__all__ = ["alerts_per_100", "calibration_table", "operating_threshold"]


def operating_threshold(
    y_true: np.ndarray | None,
    y_score: np.ndarray,
    *,
    strategy: str = "top_fraction",
    value: float = 0.2,
) -> float:
    """Score threshold (``score >= threshold`` is flagged) chosen by ``strategy``.

    * ``"fixed"``: ``value`` is the threshold.
    * ``"top_fraction"``: flag the top ``value`` fraction (the ``round(value * n)`` highest
      scores; rows tied with the last one flagged are flagged too). ``y_true`` is not used.
    * ``"youden"``: the ROC threshold maximising TPR - FPR (needs both classes).
    """
    if strategy == "fixed":
        return float(value)
    s = as_scores(y_score)
    if s.shape[0] == 0:
        raise ValueError("cannot choose a threshold from no scores")
    if strategy == "top_fraction":
        if not 0.0 <= value <= 1.0:
            raise ValueError("top_fraction value must be in [0, 1]")
        k = int(math.floor(value * s.shape[0] + 0.5))
        if k == 0:
            return float(np.nextafter(s.max(), np.inf))
        return float(np.partition(s, s.shape[0] - k)[s.shape[0] - k])
    if strategy == "youden":
        if y_true is None:
            raise ValueError("the youden strategy needs y_true")
        y = as_labels(y_true)
        s = as_scores(s, y.shape[0])
        n_pos = y.sum()
        n_neg = y.shape[0] - n_pos
        if n_pos == 0 or n_neg == 0:
            raise ValueError("the youden strategy needs both classes in y_true")
        order = np.argsort(-s, kind="stable")
        s_sorted, y_sorted = s[order], y[order]
        last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
        tpr = np.cumsum(y_sorted)[last_of_tie] / n_pos
        fpr = np.cumsum(1.0 - y_sorted)[last_of_tie] / n_neg
        return float(s_sorted[last_of_tie][int(np.argmax(tpr - fpr))])
    raise ValueError(f"unknown threshold strategy {strategy!r}; use fixed, top_fraction or youden")


def alerts_per_100(y_score: np.ndarray, threshold: float) -> float:
    """Alerts raised per 100 patients at ``threshold`` (``score >= threshold``)."""
    s = as_scores(y_score)
    if s.shape[0] == 0:
        return float("nan")
    return float(100.0 * np.mean(s >= threshold))


def calibration_table(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table over ``n_bins`` equal-width bins on [0, 1].

    Columns bin, mean_score, observed_rate, n; every bin is listed (empty bins have n = 0 and
    NaN rates). Scores outside [0, 1] fall in the first/last bin.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    y, s = inputs(y_true, y_score)
    bins = calibration_bin(s, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(bins, weights=s, minlength=n_bins) / count
        observed = np.bincount(bins, weights=y, minlength=n_bins) / count
    return pd.DataFrame({
        "bin": np.arange(n_bins),
        "mean_score": mean_score,
        "observed_rate": observed,
        "n": count.astype(np.int64),
    })

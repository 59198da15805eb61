"""Plain statistics of the audit, independent of the bootstrap (tests use them as the cross-check)."""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_rates", "two_proportion_z_test"]


def confusion_rates(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """TPR, FPR, precision and selection rate from a plain confusion matrix (NaN if undefined)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "tpr": ratio(tp, tp + fn), "fpr": ratio(fp, fp + tn), "precision": ratio(tp, tp + fp),
        "selection_rate": ratio(tp + fp, tp + fp + fn + tn), "prevalence": ratio(tp + fn, tp + fp + fn + tn),
    }


def two_proportion_z_test(x1: float, n1: float, x2: float, n2: float) -> float:
    """Two-sided p-value of H0: p1 == p2: statsmodels' pooled ``proportions_ztest``.

    NaN when a sample is empty. With no variance (both proportions 0, or both 1) the p-value is 1,
    where statsmodels divides zero by zero and returns NaN.
    """
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    pooled = (x1 + x2) / (n1 + n2)
    if pooled * (1 - pooled) == 0:
        return 1.0 if x1 / n1 == x2 / n2 else 0.0
    # statsmodels loads when a test runs, not when the package is imported
    from statsmodels.stats.proportion import proportions_ztest

    return float(proportions_ztest([x1, x2], [n1, n2], alternative="two-sided")[1])

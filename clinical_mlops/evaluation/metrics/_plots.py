"""Evaluation plots as PNG bytes (no global pyplot state): ROC, ROC by group, reliability diagram."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from clinical_mlops.core.bootstrap import ECE_BINS
from clinical_mlops.evaluation.metrics._inputs import group_labels, inputs
from clinical_mlops.evaluation.metrics._thresholds import calibration_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MAX_PLOT_POINTS", "plot_calibration", "plot_roc", "plot_roc_by_group"]

MAX_PLOT_POINTS = 2_000
"""ROC curves are drawn through at most this many of their points (the AUROC label is exact)."""


def _roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve (one point per distinct score, starting at (0, 0)) and its AUROC, by scikit-learn.

    With a single class there is no curve: one point at (0, 0) and a NaN AUROC.
    """
    from sklearn.metrics import auc, roc_curve

    if y.size == 0 or y.min() == y.max():
        return np.zeros(1), np.zeros(1), float("nan")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, float(auc(fpr, tpr))


def _thin(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``MAX_PLOT_POINTS`` points of a curve, first and last kept (a drawing, not a metric)."""
    if fpr.shape[0] <= MAX_PLOT_POINTS:
        return fpr, tpr
    idx = np.unique(np.linspace(0, fpr.shape[0] - 1, MAX_PLOT_POINTS).round().astype(np.int64))
    return fpr[idx], tpr[idx]


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib loads when a plot is drawn

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _roc_axes(fig: Figure, title: str):
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    return ax


def plot_roc(y_true: np.ndarray, y_score: np.ndarray, title: str) -> bytes:
    """ROC curve as PNG bytes."""
    from matplotlib.figure import Figure

    y, s = inputs(y_true, y_score)
    fig = Figure(figsize=(5, 5))
    ax = _roc_axes(fig, title)
    fpr, tpr, auc = _roc_points(y, s)
    if not math.isnan(auc):
        ax.plot(*_thin(fpr, tpr), linewidth=2, label=f"AUROC = {auc:.3f}")
    else:
        ax.text(0.5, 0.5, "ROC undefined (one class)", ha="center", va="center")
    ax.legend(loc="lower right")
    return _png(fig)


def plot_calibration(y_true: np.ndarray, y_score: np.ndarray, title: str) -> bytes:
    """Reliability diagram (10 equal-width bins) with a score histogram, as PNG bytes."""
    from matplotlib.figure import Figure

    y, s = inputs(y_true, y_score)
    table = calibration_table(y, s, n_bins=ECE_BINS)
    shown = table[table["n"] > 0]
    fig = Figure(figsize=(5, 6))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
    ax = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.plot(shown["mean_score"], shown["observed_rate"], marker="o", linewidth=2, label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Observed rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.tick_params(labelbottom=False)
    hist.hist(np.clip(s, 0, 1), bins=np.linspace(0, 1, 51), color="grey")
    hist.set_xlabel("Predicted risk")
    hist.set_ylabel("Count")
    return _png(fig)


def plot_roc_by_group(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray | pd.Series,
                      title: str) -> bytes:
    """One ROC curve per group as PNG bytes (single-class groups are listed but not drawn)."""
    from matplotlib.figure import Figure

    y, s = inputs(y_true, y_score)
    codes, labels = group_labels(groups, y.shape[0], "groups")
    fig = Figure(figsize=(6, 6))
    ax = _roc_axes(fig, title)
    for code, label in enumerate(labels):
        mask = codes == code
        if not mask.any():
            continue
        fpr, tpr, auc = _roc_points(y[mask], s[mask])
        if math.isnan(auc):
            ax.plot([], [], linestyle="none", label=f"{label} (n={mask.sum()}, one class)")
        else:
            ax.plot(*_thin(fpr, tpr), linewidth=1.5, label=f"{label} (n={mask.sum()}, AUROC {auc:.3f})")
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)

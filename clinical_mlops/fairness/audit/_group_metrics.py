"""Group metrics and disparities of every slice, with bootstrap replicates from the project's one kernel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clinical_mlops.core import bootstrap
from clinical_mlops.fairness.audit._slices import Slice

__all__ = [
    "DISPARITY_METRICS",
    "EXACT_MAX_ROWS",
    "GROUP_METRICS",
    "NONNEGATIVE_DISPARITIES",
    "SliceMetrics",
    "disparities",
    "slice_metrics",
]

GROUP_METRICS: tuple[str, ...] = (
    "prevalence", "selection_rate", "tpr", "fpr", "precision", "auroc", "calibration", "mean_score",
)
"""Per-group metrics; ``calibration`` is calibration-in-the-large (mean score minus observed rate)."""

DISPARITY_METRICS: dict[str, tuple[str, str]] = {
    # name: (kind, description)
    "recall_gap": ("difference", "TPR(group) - TPR(reference)"),
    "recall_ratio": ("ratio", "TPR(group) / TPR(reference)"),
    "fpr_gap": ("difference", "FPR(group) - FPR(reference)"),
    "equalized_odds_difference": ("difference", "max(|TPR gap|, |FPR gap|)"),
    "demographic_parity_difference": ("difference", "selection rate(group) - selection rate(reference)"),
    "demographic_parity_ratio": ("ratio", "selection rate(group) / selection rate(reference)"),
    "precision_gap": ("difference", "precision(group) - precision(reference)"),
    "auroc_gap": ("difference", "AUROC(group) - AUROC(reference)"),
    "calibration_gap": ("difference", "calibration-in-the-large(group) - (reference)"),
    "prevalence_difference": ("difference", "observed rate(group) - observed rate(reference)"),
}
NONNEGATIVE_DISPARITIES = frozenset({"equalized_odds_difference"})

EXACT_MAX_ROWS = 50_000
"""Above this many predictions the bootstrap draws cell counts (binned) instead of row weights;
point estimates stay exact."""

_KERNEL = [bootstrap.METRICS.index(m) for m in ("prevalence", "selection_rate", "tpr", "fpr", "precision", "auroc")]
_PREVALENCE, _MEAN_SCORE = bootstrap.METRICS.index("prevalence"), bootstrap.METRICS.index("mean_score")


@dataclass(frozen=True)
class SliceMetrics:
    """``GROUP_METRICS`` of one slice's groups: estimates (groups, metrics) and replicates (n_boot, groups, metrics)."""

    n: np.ndarray
    n_positive: np.ndarray
    estimate: np.ndarray
    replicates: np.ndarray


def _group_columns(kernel: np.ndarray) -> np.ndarray:
    """The kernel's metric columns (last axis) as ``GROUP_METRICS``."""
    out = np.empty((*kernel.shape[:-1], len(GROUP_METRICS)))
    out[..., :6] = kernel[..., _KERNEL]
    out[..., 7] = kernel[..., _MEAN_SCORE]
    out[..., 6] = out[..., 7] - kernel[..., _PREVALENCE]
    return out


def slice_metrics(y: np.ndarray, s: np.ndarray, slices: Sequence[Slice], *, threshold: float, n_boot: int, seed: int,
                  exact_max_rows: int, score_bins: int) -> list[SliceMetrics]:
    """Every slice's group metrics, exact on the rows, with replicates of the whole evaluation set.

    Up to ``exact_max_rows`` rows, every slice shares the same row-count replicates (so a
    group and its reference are recomputed on the same resample); above it, each slice draws
    its own multinomial cell counts.
    """
    results = bootstrap.group_bootstrap(y, s, [(sl.codes, len(sl.labels)) for sl in slices], threshold=threshold,
                                        n_boot=n_boot, seed=seed, exact_max_rows=exact_max_rows,
                                        score_bins=score_bins)
    return [SliceMetrics(r.n, r.n_positive, _group_columns(r.estimate), _group_columns(r.replicates))
            for r in results]


def disparities(metrics: np.ndarray, ref: int) -> dict[str, np.ndarray]:
    """Disparity arrays (replicates x groups) of every group against group ``ref``."""
    idx = {m: k for k, m in enumerate(GROUP_METRICS)}

    def col(name: str) -> np.ndarray:
        return metrics[..., idx[name]]

    def ref_col(name: str) -> np.ndarray:
        return metrics[:, ref : ref + 1, idx[name]]

    tpr_gap = col("tpr") - ref_col("tpr")
    fpr_gap = col("fpr") - ref_col("fpr")
    with np.errstate(invalid="ignore"):
        eod = np.fmax(np.abs(tpr_gap), np.abs(fpr_gap))
        eod[np.isnan(tpr_gap) | np.isnan(fpr_gap)] = np.nan
    return {
        "recall_gap": tpr_gap,
        "recall_ratio": bootstrap.safe_div(col("tpr"), np.broadcast_to(ref_col("tpr"), tpr_gap.shape)),
        "fpr_gap": fpr_gap,
        "equalized_odds_difference": eod,
        "demographic_parity_difference": col("selection_rate") - ref_col("selection_rate"),
        "demographic_parity_ratio": bootstrap.safe_div(col("selection_rate"),
                                                       np.broadcast_to(ref_col("selection_rate"), tpr_gap.shape)),
        "precision_gap": col("precision") - ref_col("precision"),
        "auroc_gap": col("auroc") - ref_col("auroc"),
        "calibration_gap": col("calibration") - ref_col("calibration"),
        "prevalence_difference": col("prevalence") - ref_col("prevalence"),
    }


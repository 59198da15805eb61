"""One bootstrap kernel for evaluation, fairness and change control: exact on rows, binned above a cap.

Every interval the project reports is a percentile interval of a nonparametric bootstrap drawn
from ``numpy.random.default_rng(seed)``: the same seed gives the same replicates, whoever asks.

* **Exact (rows)** — each replicate is a vector of multinomial row counts; every metric of
  :data:`METRICS` is a weighted statistic over a :class:`Subset` (a group, a model's scores),
  vectorised over a block of replicates (:func:`row_replicates`). All subsets of one cohort
  share the draws: subgroups vary in size across replicates, and two models scored on the same
  rows are compared on the same resamples (change control's paired bootstrap).
* **Binned (cells)** — above a caller's row cap, each replicate is one multinomial draw of the
  rows over (group, score key, label) cells (:func:`binned_replicates`); counts-based metrics
  stay exact, AUROC/AP tie the rows of a score key, Brier/ECE use cell means.

:func:`group_bootstrap` chooses between the two for a set of partitions of the rows (overall,
each sensitive attribute, each intersection) and always computes the point estimates on the
rows. :func:`percentile_interval` turns replicates into intervals, skipping undefined ones.
"""

from clinical_mlops.core.bootstrap._binned import (
    DEFAULT_BINS,
    Cells,
    ScoreKeys,
    auroc,
    average_precision,
    binned_replicates,
    cell_metrics,
    cells,
    replicate_blocks,
    score_keys,
)
from clinical_mlops.core.bootstrap._exact import (
    BLOCK_BYTES,
    ECE_BINS,
    METRICS,
    Subset,
    calibration_bin,
    check_arguments,
    percentile_interval,
    point_estimates,
    row_replicates,
    safe_div,
    single_blas_thread,
    subset,
    weight_blocks,
    weighted_metrics,
)
from clinical_mlops.core.bootstrap._groups import GroupBootstrap, group_bootstrap, method_for
from clinical_mlops.core.bootstrap._inputs import coded_predictions

__all__ = [
    "BLOCK_BYTES",
    "DEFAULT_BINS",
    "ECE_BINS",
    "METRICS",
    "Cells",
    "GroupBootstrap",
    "ScoreKeys",
    "Subset",
    "auroc",
    "average_precision",
    "binned_replicates",
    "calibration_bin",
    "cell_metrics",
    "cells",
    "check_arguments",
    "coded_predictions",
    "group_bootstrap",
    "method_for",
    "percentile_interval",
    "point_estimates",
    "replicate_blocks",
    "row_replicates",
    "safe_div",
    "score_keys",
    "single_blas_thread",
    "subset",
    "weight_blocks",
    "weighted_metrics",
]

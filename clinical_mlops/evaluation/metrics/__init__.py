"""Model evaluation: discrimination, calibration and operating-point metrics with bootstrap CIs.

Everything here is plain numpy/pandas/matplotlib so it can be unit-tested and reused outside
the orchestration layer.

Confidence intervals are percentile intervals from the project's one bootstrap kernel
(:mod:`clinical_mlops.core.bootstrap`): count-weight replicates drawn with
``numpy.random.default_rng(seed)``, every metric a weighted statistic vectorised over a block of
replicates. Subgroup metrics reuse the *same* cohort-level replicates restricted to the group's
rows. A replicate in which a metric is undefined (e.g. no positives in a small group) is skipped
when forming the interval; if no replicate defines it the interval is NaN.

Above ``EXACT_MAX_ROWS`` rows (250k by default) the replicates are drawn as multinomial counts
over (group, score bin, label) cells instead, per attribute: the threshold rates are exact on
every replicate, AUROC/AUPRC treat a bin as tied, Brier and ECE use cell means. Point estimates
are always computed on the rows. :func:`bootstrap_description` says which method an evaluation
of ``n`` rows used.

Note that percentile intervals of biased statistics (ECE is the main one: it is an absolute
value and is biased upwards on resamples) need not contain the point estimate.
"""

from clinical_mlops.core.bootstrap import ECE_BINS
from clinical_mlops.evaluation.metrics._inputs import MISSING_GROUP
from clinical_mlops.evaluation.metrics._plots import MAX_PLOT_POINTS, plot_calibration, plot_roc, plot_roc_by_group
from clinical_mlops.evaluation.metrics._tables import (
    EXACT_MAX_ROWS,
    METRICS,
    OVERALL_ATTRIBUTE,
    OVERALL_GROUP,
    MetricEstimate,
    bootstrap_description,
    bootstrap_metrics,
    metrics_by_group,
)
from clinical_mlops.evaluation.metrics._thresholds import alerts_per_100, calibration_table, operating_threshold

__all__ = [
    "ECE_BINS",
    "EXACT_MAX_ROWS",
    "MAX_PLOT_POINTS",
    "METRICS",
    "MISSING_GROUP",
    "OVERALL_ATTRIBUTE",
    "OVERALL_GROUP",
    "MetricEstimate",
    "alerts_per_100",
    "bootstrap_description",
    "bootstrap_metrics",
    "calibration_table",
    "metrics_by_group",
    "operating_threshold",
    "plot_calibration",
    "plot_roc",
    "plot_roc_by_group",
]

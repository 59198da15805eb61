"""Drift between a reference population and a new extract: per feature, in predictions, in the target.

Every statistic is computed over the *full* data, not a sample. Both populations are staged
once in a DuckDB temp table (``_side`` 0 = reference, 1 = current); for each feature one
``GROUP BY`` returns the value counts on each side, and everything else is vectorised numpy
over those counts (a feature has at most a few hundred distinct values, so the heavy part is
the scan, which DuckDB does column by column):

* numeric features: two-sample Kolmogorov–Smirnov. D is the largest gap between the two
  empirical CDFs, read exactly off the merged value counts; the p-value is Smirnov's
  asymptotic distribution as in ``scipy.stats.ks_2samp(method="asymp")`` (conservative when
  values are tied, as counts are);
* categorical features: Pearson's chi-square on the 2 x k table of counts; categories whose
  expected count is under 5 on either side are pooled so the approximation holds;
* population stability index (PSI) for both: numeric values binned at the reference's
  deciles, categorical values per category, empty cells floored at 1e-4;
* p-values corrected for multiple comparisons across the features
  (:func:`clinical_mlops.core.multiple_testing.adjust_p_values`: Benjamini–Hochberg by
  default; Holm, Bonferroni or none as the policy says).

A feature **drifts** when its test is significant after the correction (adjusted p below
``alpha``), so on a resample of the reference population the chance of flagging any feature
stays near ``alpha``. Its shift is **material** when the PSI reaches ``psi_threshold``: on
extracts of hundreds of thousands of rows a test flags shifts too small to matter, and the PSI
column (and the ``material`` flag) says how large each one is. The **dataset** drifts when the
share of drifting features reaches ``dataset_drift_share``; materiality is reported beside it,
never a switch the policy does not declare. The tests use one encounter per patient and
side (a patient's encounters are not independent draws; counting all of them made resamples of
one population flag age in 8 of 30 seeds at p < 0.01); PSI, means and shares use every row.
Prediction drift (the model's score distribution and alert rate) and target drift (label
prevalence, where labels exist) are tested the same way and reported beside the verdict.

Results are appended to ``monitoring.drift_runs`` (one row per comparison, with the policy hash)
and ``monitoring.drift_metrics`` (one row per statistic), a time series across extracts. Only
aggregates are stored: counts, statistics, means and category shares — never rows or ids.

Parts: ``_counts`` (the tests from counts), ``_result`` (settings, results, the decision),
``_compare`` (staging and comparing two populations, score drift), ``_store`` (the time
series), ``_populations`` (which rows are the reference and the current extract).
"""

from clinical_mlops.core.multiple_testing import adjust_p_values
from clinical_mlops.drift.statistics._compare import (
    NULL_CATEGORY,
    SCORE_CHUNK_ROWS,
    STAGE_TABLE,
    compare,
    score_drift,
    scores_in_chunks,
    stage_populations,
)
from clinical_mlops.drift.statistics._counts import (
    MIN_EXPECTED_COUNT,
    PSI_BINS,
    PSI_EPSILON,
    chi_square_from_counts,
    ks_from_counts,
    numeric_psi,
    psi_from_counts,
)
from clinical_mlops.drift.statistics._populations import current_population, model_record, select_reference
from clinical_mlops.drift.statistics._result import DriftResult, DriftSettings, FeatureDrift, with_prediction
from clinical_mlops.drift.statistics._store import (
    DDL,
    Reference,
    ReportFile,
    ensure_tables,
    latest_runs,
    store,
    top_drifted,
)

__all__ = [
    "DDL",
    "MIN_EXPECTED_COUNT",
    "NULL_CATEGORY",
    "PSI_BINS",
    "PSI_EPSILON",
    "SCORE_CHUNK_ROWS",
    "STAGE_TABLE",
    "DriftResult",
    "DriftSettings",
    "FeatureDrift",
    "Reference",
    "ReportFile",
    "adjust_p_values",
    "chi_square_from_counts",
    "compare",
    "current_population",
    "ensure_tables",
    "ks_from_counts",
    "latest_runs",
    "model_record",
    "numeric_psi",
    "psi_from_counts",
    "score_drift",
    "scores_in_chunks",
    "select_reference",
    "stage_populations",
    "store",
    "top_drifted",
    "with_prediction",
]

"""Production monitoring: outcomes joined to predictions as they arrive, performance and fairness
over time, and training–serving skew.

**Predictions** come from two places: the scoring service's prediction log once ingested
(``monitoring.prediction_log``, requests that named their ``encounter_id``) and batch scoring
(``ml.batch_predictions``).

**Outcomes** arrive later. For the Diabetes 130 extracts the outcome of an encounter is its
``readmitted`` field in a validated extract, turned into the cohort's label with the cohort's
own target SQL (the same definition as training); an operator can also supply a labels file
(CSV: ``encounter_id,label[,observed_at]``) that takes precedence. An outcome is attached only
when it has been observed (its extract has landed, or its ``observed_at`` has passed) *and*
the label delay has elapsed since the prediction (default 30 days: a 30-day readmission is not
known before). Joined rows are kept in ``monitoring.prediction_outcomes`` and never rewritten.

**Performance over time** (``monitoring.production_metrics``): per period and model version,
AUROC, AUPRC, Brier, recall, precision and alerts per 100 with bootstrap CIs
(``clinical_mlops.evaluation.metrics``). **Fairness** on labelled production predictions applies the
governance policy with the same code as the held-out audit (``clinical_mlops.fairness.audit``),
stored with ``model_role = 'production'``. **Skew** compares the features the service was sent
with the training features: per feature a KS or chi-square test and PSI (reusing
``clinical_mlops.drift.statistics``), and, for encounters present on both sides, the share whose served
value differs from the warehouse's — the signature of a feature pipeline that disagrees with
the training SQL. Everything stored is aggregate; no row leaves the warehouse.

Parts: ``_tables`` (the monitoring tables), ``_outcomes`` (the label join), ``_performance``
(metrics over time, the verdict, the plot), ``_fairness``, ``_skew``.

Every verdict follows :mod:`clinical_mlops.core.evidence`: no labelled outcome in the window (or too
few, one class, nothing served) is ``insufficient_evidence``, never a pass; AUROC is judged on its
interval against the held-out AUROC minus the tolerance, fairness per group on its interval.
"""

from clinical_mlops.monitoring.production._fairness import ProductionFairness, RuleEvidence, production_fairness
from clinical_mlops.monitoring.production._outcomes import (
    DEFAULT_LABEL_DELAY_DAYS,
    LabelJoinSummary,
    join_labels,
    labelled_predictions,
    no_labels_reason,
    production_predictions_sql,
    read_labels_file,
    stage_warehouse_outcomes,
)
from clinical_mlops.monitoring.production._performance import (
    REPORTED_METRICS,
    PerformanceSummary,
    heldout_auroc,
    performance_over_time,
    plot_over_time,
)
from clinical_mlops.monitoring.production._skew import SkewResult, training_serving_skew
from clinical_mlops.monitoring.production._tables import OUTCOMES_DDL, PRODUCTION_METRICS_DDL, SKEW_DDL, ensure_tables, utc_now

__all__ = [
    "DEFAULT_LABEL_DELAY_DAYS",
    "OUTCOMES_DDL",
    "PRODUCTION_METRICS_DDL",
    "REPORTED_METRICS",
    "SKEW_DDL",
    "LabelJoinSummary",
    "PerformanceSummary",
    "ProductionFairness",
    "RuleEvidence",
    "SkewResult",
    "ensure_tables",
    "heldout_auroc",
    "join_labels",
    "labelled_predictions",
    "no_labels_reason",
    "performance_over_time",
    "plot_over_time",
    "production_fairness",
    "production_predictions_sql",
    "read_labels_file",
    "stage_warehouse_outcomes",
    "training_serving_skew",
    "utc_now",
]

"""Subgroup fairness audits with statistics, judged against the governance policy.

An audit takes held-out labels, risk scores and sensitive attributes, and the model's operating
threshold (``score >= threshold`` is an alert). For every group of every sensitive attribute and
every declared intersection (``race × gender``) it computes n, prevalence, selection rate, TPR
(recall), FPR, precision, AUROC and calibration-in-the-large (mean predicted risk minus observed
rate); then each group's disparities against the policy's reference group as differences and
ratios (recall gap, FPR gap, equalized-odds difference, demographic-parity ratio and difference,
calibration gap, precision and AUROC gaps).

Statistics
----------
* **Bootstrap intervals** for every group metric and every disparity, from the project's one
  bootstrap kernel (:mod:`clinical_mlops.core.bootstrap`): the whole evaluation set is resampled
  (multinomial count weights, ``policy.fairness.n_bootstrap`` replicates, a fixed seed), each
  group's metric and its reference's are recomputed on the same replicate, and the percentile
  interval of the replicate disparities is reported at ``policy.fairness.confidence``. Above
  ``exact_max_rows`` predictions (50k by default) the replicates are drawn as multinomial counts
  over (group, score bin, label) cells (1,000 score quantile bins): the same resampling
  distribution for every count-based metric, AUROC and mean score approximated within a bin.
  Point estimates are always exact. The audit records which (``bootstrap_method``, ``score_bins``).
* **Significance of recall gaps**: a two-proportion z-test of each group's recall against the
  reference group's, across all groups of all slices, corrected for multiple comparisons
  (:func:`clinical_mlops.core.multiple_testing.adjust_p_values`) with Holm (family-wise error)
  or Benjamini–Hochberg (false discovery rate), as the policy says.

Verdicts
--------
For each policy metric and each non-reference group: ``fail`` only when the whole interval lies
outside the policy bound (evidence of a breach); ``pass`` only when the whole interval lies
inside it (evidence of compliance); otherwise ``insufficient_evidence`` — as it is, always, for a
group (or reference) below ``min_group_size``, a metric that is undefined, every group of a slice
whose reference group is absent from the data ("reference group X absent from the data"), and a
required group absent from the data. A small group is never a pass.

Rule status (the evidence rule, :func:`rule_evidence`)
------------------------------------------------------
A policy rule *fails* if any group fails; else it is ``insufficient_evidence`` if any
*required* group lacks evidence or no group at all could be assessed; else it passes. Required
groups are the policy's ``required_groups`` of each attribute and every group whose share of the
audited rows reaches ``fairness.required_population_share`` (never the reference; intersections
have none). Other groups without evidence are *not assessable*: listed in the check, the report
and the gate, acknowledged at promotion, not blocking by themselves. For each required group the
audit states the **minimum detectable recall gap** (80 % power, two-sided ``significance.alpha``,
:func:`min_detectable_gap`). The registry reads the stored result through :func:`rule_statuses`.

No row-level data leaves this package: audits are aggregates per group.
"""

from clinical_mlops.fairness.audit._audit import audit, audit_arrays, audit_model
from clinical_mlops.fairness.audit._gate import FairnessGate, GroupFinding, RuleStatus, gate_for_audit, rule_statuses
from clinical_mlops.fairness.audit._group_metrics import (
    DISPARITY_METRICS,
    EXACT_MAX_ROWS,
    GROUP_METRICS,
    NONNEGATIVE_DISPARITIES,
)
from clinical_mlops.fairness.audit._power import DEFAULT_POWER, min_detectable_gap
from clinical_mlops.fairness.audit._slices import INTERSECTION_SEPARATOR, MISSING_GROUP, Slice, slices_from_codes
from clinical_mlops.fairness.audit._statistics import confusion_rates, two_proportion_z_test
from clinical_mlops.fairness.audit._store import (
    FAIRNESS_DDL,
    ensure_tables,
    latest_verdicts,
    predictions_with_attributes,
    store_audit,
    summary_for,
)
from clinical_mlops.fairness.audit._verdicts import (
    SMALL_CELL,
    VERDICTS,
    FairnessAudit,
    RuleOutcome,
    group_label,
    rule_evidence,
    verdict_for,
)

__all__ = [
    "DEFAULT_POWER",
    "DISPARITY_METRICS",
    "EXACT_MAX_ROWS",
    "FAIRNESS_DDL",
    "FairnessAudit",
    "FairnessGate",
    "GROUP_METRICS",
    "GroupFinding",
    "INTERSECTION_SEPARATOR",
    "MISSING_GROUP",
    "NONNEGATIVE_DISPARITIES",
    "RuleOutcome",
    "RuleStatus",
    "SMALL_CELL",
    "Slice",
    "VERDICTS",
    "audit",
    "audit_arrays",
    "audit_model",
    "confusion_rates",
    "ensure_tables",
    "gate_for_audit",
    "group_label",
    "latest_verdicts",
    "min_detectable_gap",
    "predictions_with_attributes",
    "rule_evidence",
    "rule_statuses",
    "slices_from_codes",
    "store_audit",
    "summary_for",
    "two_proportion_z_test",
    "verdict_for",
]

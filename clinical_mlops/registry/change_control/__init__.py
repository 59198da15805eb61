"""Change control: a challenger against the champion on the same held-out data, under the policy.

The FDA's predetermined change control plan pattern (REFERENCE.md §1), made checkable:

* **What changed.** The two registered versions are diffed — features and their types (from the
  MLflow signatures), algorithm and hyperparameters (``ml.model_versions.params_json``), training
  data versions (extract sha256s), cohort spec hash, code commit and lock file — and each
  difference is classified as a *modification kind*: ``retrain_on_new_data``, ``recalibration``,
  ``hyperparameter_change``, ``algorithm_change``, ``feature_set_change``,
  ``cohort_spec_change`` (target, exclusions, split or threshold policy may differ; the recorded
  hash cannot say which). The change is **inside the envelope** when every kind is in the
  policy's ``allowed_modifications``; anything else "requires new review" (unknown kinds too:
  the envelope fails closed).
* **Impact.** Both models score the *current* test split (patient-grouped, so neither saw those
  patients in training) — stored test predictions are reused when they cover it, otherwise the
  registered model is loaded and scored. Metric deltas (challenger − champion) get paired
  bootstrap CIs from the project's one bootstrap kernel (:mod:`clinical_mlops.core.bootstrap`):
  each replicate resamples rows once and evaluates both models on the same resample, overall and
  per sensitive-attribute group (groups under the policy's minimum size get point estimates
  only: insufficient evidence).
* **Fairness.** Read from the challenger's fairness audit
  (:func:`clinical_mlops.fairness.audit.rule_statuses`), one status per blocking rule; no audit,
  or an audit under another policy, is insufficient evidence that blocks (the audit must run). A
  failure the champion does not have is a plain fail; one it shares passes only when the paired
  interval of (challenger gap − champion gap) shows it is not worse than a margin. Groups that
  could not be assessed are listed and need an acknowledgement (a waiver).
* **The mitigated challenger.** A ``<cohort>_mitigated`` version derived from the current
  candidate is assessed on the same rows; its trade-off is shown, and its decision is at best
  ``pending_approval`` (:mod:`._mitigated`).
* **Drift context.** The latest drift verdict of each extract, and whether the challenger was
  trained on the drifted data.

:func:`decide` turns a report into the promotion decision — ``promoted``, ``blocked`` or
``pending_approval`` under the one evidence rule, with the waivers it relies on and the exact
next command — under the policy's acceptance criteria (or its absolute criteria, judged on the
intervals, when there is no champion yet); :func:`render_markdown`
renders both for people; :func:`store_report` and :func:`record_decision` keep them in the
``audit`` schema with the policy hash. Everything is aggregate: metrics, counts, hashes.
"""

from clinical_mlops.registry.change_control._decision import (
    BLOCKED,
    DECISION_STATUSES,
    NOT_ASSESSABLE_GROUPS,
    PENDING_APPROVAL,
    PROMOTED,
    Criterion,
    Decision,
    decide,
    promote_command,
    waive_command,
)
from clinical_mlops.registry.change_control._diff import (
    NO_MODIFICATION,
    Envelope,
    ModelDescription,
    Modification,
    check_envelope,
    classify_modifications,
    describe_model,
)
from clinical_mlops.registry.change_control._fairness import (
    DEFAULT_NON_INFERIORITY_MARGIN,
    FairnessComparison,
    RuleAssessment,
    SliceSampler,
    compare_fairness,
    non_inferiority_margin,
    open_incidents,
)
from clinical_mlops.registry.change_control._mitigated import (
    MITIGATED_ROLE,
    MitigatedTradeoff,
    derived_mitigation,
    review_reason,
    tradeoff,
)
from clinical_mlops.registry.change_control._paired import (
    LOWER_IS_BETTER,
    PAIRED_METRICS,
    PairedResult,
    paired_bootstrap,
)
from clinical_mlops.registry.change_control._rendering import render_markdown
from clinical_mlops.registry.change_control._report import ChangeControlReport, Scorer, build_report, drift_context
from clinical_mlops.registry.change_control._store import (
    DDL,
    ensure_tables,
    latest_report,
    record_decision,
    store_report,
)

__all__ = [
    "BLOCKED",
    "DDL",
    "DECISION_STATUSES",
    "DEFAULT_NON_INFERIORITY_MARGIN",
    "LOWER_IS_BETTER",
    "MITIGATED_ROLE",
    "NOT_ASSESSABLE_GROUPS",
    "NO_MODIFICATION",
    "PAIRED_METRICS",
    "PENDING_APPROVAL",
    "PROMOTED",
    "ChangeControlReport",
    "Criterion",
    "Decision",
    "Envelope",
    "FairnessComparison",
    "MitigatedTradeoff",
    "Modification",
    "ModelDescription",
    "PairedResult",
    "RuleAssessment",
    "Scorer",
    "SliceSampler",
    "build_report",
    "check_envelope",
    "classify_modifications",
    "compare_fairness",
    "decide",
    "derived_mitigation",
    "describe_model",
    "drift_context",
    "ensure_tables",
    "latest_report",
    "non_inferiority_margin",
    "open_incidents",
    "paired_bootstrap",
    "promote_command",
    "record_decision",
    "render_markdown",
    "review_reason",
    "store_report",
    "tradeoff",
    "waive_command",
]

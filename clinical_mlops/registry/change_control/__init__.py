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
* **Fairness.** Verdicts are read from ``monitoring.fairness_verdicts`` when the fairness report
  has run; otherwise the policy's blocking gap rules that can be computed from the same
  replicates (recall and FPR gaps to the reference group) are evaluated here, a gap failing only
  when its whole interval lies outside the bound. A *new* failure is one the challenger has and
  the champion has not.
* **Drift context.** The latest drift verdict of each extract, and whether the challenger was
  trained on the drifted data.

:func:`decide` turns a report into the promotion decision under the policy's acceptance
criteria (or its absolute criteria when there is no champion yet); :func:`render_markdown`
renders both for people; :func:`store_report` and :func:`record_decision` keep them in the
``audit`` schema with the policy hash. Everything is aggregate: metrics, counts, hashes.
"""

from clinical_mlops.registry.change_control._decision import Criterion, Decision, decide
from clinical_mlops.registry.change_control._diff import (
    NO_MODIFICATION,
    Envelope,
    ModelDescription,
    Modification,
    check_envelope,
    classify_modifications,
    describe_model,
)
from clinical_mlops.registry.change_control._fairness import FairnessComparison, compare_fairness
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
    "DDL",
    "LOWER_IS_BETTER",
    "NO_MODIFICATION",
    "PAIRED_METRICS",
    "ChangeControlReport",
    "Criterion",
    "Decision",
    "Envelope",
    "FairnessComparison",
    "Modification",
    "ModelDescription",
    "PairedResult",
    "Scorer",
    "build_report",
    "check_envelope",
    "classify_modifications",
    "compare_fairness",
    "decide",
    "describe_model",
    "drift_context",
    "ensure_tables",
    "latest_report",
    "paired_bootstrap",
    "record_decision",
    "render_markdown",
    "store_report",
]

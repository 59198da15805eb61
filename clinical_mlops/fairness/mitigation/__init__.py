"""Bias mitigation options and the trade-off a reviewer needs to choose between them.

Three options, each fitted on the training split only and evaluated on the same held-out split
as the candidate:

* ``group_thresholds`` (post-processing): per-group thresholds on the candidate's risk score so
  that every group's recall on the training split equals the overall recall at the operating
  threshold — equal opportunity at the same alert policy. Needs the sensitive attribute at
  prediction time.
* ``threshold_optimizer`` (post-processing): Fairlearn's ``ThresholdOptimizer`` under the
  policy's constraint (``true_positive_rate_parity``) with a balanced-accuracy objective. Its
  randomised rule is made deterministic for deployment: each group's threshold is the training
  score quantile giving the group the selection rate the optimiser chose. Needs the sensitive
  attribute at prediction time.
* ``exponentiated_gradient`` (in-processing): Fairlearn's ``ExponentiatedGradient`` reduction
  under the same constraint over a logistic regression
  (:data:`clinical_mlops.training.params.REDUCTION_ORACLE_PARAMS`); the risk score is the weighted mixture
  of the reduction's predictors' probabilities, thresholded by the cohort's threshold policy. Does
  not use the sensitive attribute at prediction time (only in training). Each oracle call fits on a
  sparse copy of the one-hot design (:mod:`clinical_mlops.fairness.reduction_oracle`).

Post-processed models are served as :class:`GroupThresholdModel`, which shifts each group's
score on the logit scale so the cohort's single operating threshold applies to everyone
(``adjusted >= t`` exactly when ``score >= t_group``); ranking within a group is unchanged but the
adjusted score is a decision score, not a calibrated probability.
"""

from clinical_mlops.fairness.mitigation._compare import Comparison, compare_mitigations
from clinical_mlops.fairness.mitigation._fit import fit_mitigation
from clinical_mlops.fairness.mitigation._models import (
    METHODS,
    ExponentiatedGradientModel,
    GroupThresholdModel,
    MitigationResult,
    sensitive_feature,
)

__all__ = [
    "METHODS",
    "Comparison",
    "ExponentiatedGradientModel",
    "GroupThresholdModel",
    "MitigationResult",
    "compare_mitigations",
    "fit_mitigation",
    "sensitive_feature",
]

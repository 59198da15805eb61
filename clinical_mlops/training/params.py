"""The model families' hyperparameters and the training sample's defaults: plain values, no scikit-learn.

The one place these defaults are defined (:mod:`.modelling` and :mod:`.fit` re-export them); the Dagster
configs read theirs from here when the Definitions load, without importing the fitting code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["DEFAULT_MAX_TRAINING_ROWS", "DEFAULT_SUBSAMPLE_SEED", "REDUCTION_ORACLE_PARAMS", "GradientBoostingParams",
           "LogisticRegressionParams", "registered_model_name"]

DEFAULT_MAX_TRAINING_ROWS = 1_000_000
"""Above this many training rows the fit uses a seeded patient-grouped subsample (test is scored whole)."""
DEFAULT_SUBSAMPLE_SEED = 20240601


def registered_model_name(cohort: str, role: str) -> str:
    """The MLflow registered model of a cohort's model in a role: ``<cohort>_<role>``
    (``readmission_30d_candidate``; roles ``baseline``, ``candidate``, ``mitigated``)."""
    return f"{cohort}_{role}"


@dataclass(frozen=True)
class LogisticRegressionParams:
    """The baseline's hyperparameters; the defaults are the project's."""

    C: float = 0.5
    max_iter: int = 500
    class_weight: str | None = None
    seed: int = 7

    def as_dict(self) -> dict:
        return {"algorithm": "logistic_regression", **asdict(self)}


@dataclass(frozen=True)
class GradientBoostingParams:
    """The candidate's hyperparameters; the defaults are the project's."""

    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    seed: int = 7

    def as_dict(self) -> dict:
        return {"algorithm": "hist_gradient_boosting", **asdict(self)}


REDUCTION_ORACLE_PARAMS = LogisticRegressionParams(C=0.5, max_iter=300)
"""The logistic regression the exponentiated-gradient mitigation refits at every iteration (its "oracle",
:mod:`clinical_mlops.fairness.reduction_oracle`): the baseline's regularisation with a lower iteration
limit, because the reduction fits it a few dozen times. A modelling hyperparameter, not a policy
rule: the policy says which constraint a mitigation must meet (``fairness.mitigation``), not how
the model meeting it is fitted. ``seed`` is unused: the mitigation's own seed is the random state."""

"""The deployable mitigated models (group thresholds folded into one score; the exponentiated-gradient
mixture), the sensitive attribute as the audit names groups, and one fitted mitigation's result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin

from clinical_mlops.fairness import audit as fairness

__all__ = ["METHODS", "ExponentiatedGradientModel", "GroupThresholdModel", "MitigationResult", "sensitive_feature"]

METHODS: dict[str, dict[str, object]] = {
    "group_thresholds": {"kind": "post-processing", "needs_sensitive_attribute": True},
    "threshold_optimizer": {"kind": "post-processing", "needs_sensitive_attribute": True},
    "exponentiated_gradient": {"kind": "in-processing", "needs_sensitive_attribute": False},
}
_EPS = 1e-6


def sensitive_feature(frame: pd.DataFrame, attributes: Sequence[str]) -> pd.Series:
    """The (joined, for an intersection) sensitive attribute as text, as the audit names groups."""
    text = frame[list(attributes)].astype("object").fillna(fairness.MISSING_GROUP).astype(str)
    if len(attributes) == 1:
        return text.iloc[:, 0].reset_index(drop=True)
    return text.agg(fairness.INTERSECTION_SEPARATOR.join, axis=1).reset_index(drop=True)


def _logit(p: np.ndarray | float) -> np.ndarray:
    return logit(np.clip(p, _EPS, 1 - _EPS))


class GroupThresholdModel(ClassifierMixin, BaseEstimator):
    """A fitted risk model with per-group thresholds folded into its score.

    ``predict_proba`` expects the model's features plus the sensitive attribute columns.
    """

    # registered models are serialised (skops) under this public path, as before the split: the models
    # already in a registry keep loading, and new ones record the same type name
    __module__ = "clinical_mlops.fairness.mitigation"

    def __init__(self, base=None, feature_columns=(), attributes=(), thresholds=None, operating_threshold=0.5):
        self.base = base
        self.feature_columns = feature_columns
        self.attributes = attributes
        self.thresholds = thresholds
        self.operating_threshold = operating_threshold

    def fit(self, X=None, y=None):  # already fitted: the base model and thresholds are given
        self.classes_ = np.array([0, 1])
        return self

    def base_score(self, X: pd.DataFrame) -> np.ndarray:
        return self.base.predict_proba(X[list(self.feature_columns)])[:, 1]

    def group_thresholds(self, X: pd.DataFrame) -> np.ndarray:
        groups = sensitive_feature(X, self.attributes)
        table = dict(self.thresholds or {})
        return groups.map(lambda g: table.get(g, self.operating_threshold)).to_numpy(dtype=float)

    def adjust(self, base_scores: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        """The decision score of rows ``X`` whose base model scores are ``base_scores``."""
        shift = _logit(self.operating_threshold) - _logit(self.group_thresholds(X))
        return expit(_logit(np.asarray(base_scores, dtype=float)) + shift)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        adjusted = self.adjust(self.base_score(X), X)
        return np.column_stack([1 - adjusted, adjusted])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= self.operating_threshold).astype(int)


class ExponentiatedGradientModel(ClassifierMixin, BaseEstimator):
    """The weighted mixture of an ExponentiatedGradient reduction's predictors, as a risk score."""

    # registered models are serialised (skops) under this public path, as before the split: the models
    # already in a registry keep loading, and new ones record the same type name
    __module__ = "clinical_mlops.fairness.mitigation"

    def __init__(self, preprocess=None, predictors=(), weights=(), feature_columns=()):
        self.preprocess = preprocess
        self.predictors = predictors
        self.weights = weights
        self.feature_columns = feature_columns

    def fit(self, X=None, y=None):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        Z = self.preprocess.transform(X[list(self.feature_columns)])
        score = np.zeros(Z.shape[0])
        for predictor, weight in zip(self.predictors, self.weights):
            score += float(weight) * predictor.predict_proba(Z)[:, 1]
        score /= max(float(np.sum(self.weights)), _EPS)
        return np.column_stack([1 - score, score])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


@dataclass
class MitigationResult:
    """One fitted mitigation: the deployable model, its held-out scores and what it needs."""

    method: str
    model: object
    operating_threshold: float
    test_scores: np.ndarray
    needs_sensitive_attribute: bool
    attributes: tuple[str, ...]
    params: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(METHODS[self.method]["kind"])

"""Fitting one mitigation on the training split and scoring the held-out split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.fairness import reduction_oracle
from clinical_mlops.fairness.mitigation._models import (
    METHODS,
    ExponentiatedGradientModel,
    GroupThresholdModel,
    MitigationResult,
    sensitive_feature,
)
from clinical_mlops.training import modelling
from clinical_mlops.training.params import REDUCTION_ORACLE_PARAMS
from clinical_mlops.features.cohort import CohortSpec

__all__ = ["fit_mitigation"]

_CONSTRAINTS = {
    "true_positive_rate_parity": "TruePositiveRateParity",
    "equalized_odds": "EqualizedOdds",
    "demographic_parity": "DemographicParity",
    "false_positive_rate_parity": "FalsePositiveRateParity",
}


def _model_frame(frame: pd.DataFrame, spec: CohortSpec, attributes: Sequence[str]) -> pd.DataFrame:
    """Model input (declared types) plus the sensitive attribute columns."""
    x = modelling.model_input(frame, spec).reset_index(drop=True)
    for a in attributes:
        if a not in x.columns:
            x[a] = frame[a].astype("object").reset_index(drop=True)
    return x


def _thresholds_for_recall(scores: np.ndarray, y: np.ndarray, groups: pd.Series, target_recall: float,
                           min_positives: int) -> dict[str, float]:
    thresholds = {}
    for group in groups.unique():
        mask = (groups == group).to_numpy()
        positives = np.sort(scores[mask & (y == 1)])
        if positives.size < min_positives:
            continue
        # the highest threshold that flags at least target_recall of the group's positives
        k = int(np.ceil(target_recall * positives.size))
        thresholds[str(group)] = float(positives[positives.size - max(k, 1)])
    return thresholds


def _thresholds_for_selection(scores: np.ndarray, groups: pd.Series, rates: dict[str, float]) -> dict[str, float]:
    thresholds = {}
    for group, rate in rates.items():
        s = scores[(groups == group).to_numpy()]
        if s.size == 0:
            continue
        thresholds[str(group)] = float(evaluation.operating_threshold(None, s, strategy="top_fraction",
                                                                      value=float(np.clip(rate, 0, 1))))
    return thresholds


def fit_mitigation(
    method: str,
    *,
    base_model,
    train: pd.DataFrame,
    test: pd.DataFrame,
    spec: CohortSpec,
    attributes: Sequence[str],
    operating_threshold: float,
    constraint: str = "true_positive_rate_parity",
    seed: int = 7,
    min_positives: int = 30,
    eg_max_iter: int = 20,
    eg_max_rows: int = 30_000,
    base_train_scores: np.ndarray | None = None,
    base_test_scores: np.ndarray | None = None,
) -> MitigationResult:
    """Fit one mitigation on ``train`` and score ``test``; see the package docstring. ``base_train_scores`` /
    ``base_test_scores``: ``base_model``'s scores of those rows, if known (post-processing reuses them)."""
    if method not in METHODS:
        raise ValueError(f"unknown mitigation {method!r} (expected one of {', '.join(METHODS)})")
    attributes = tuple(attributes)
    features = list(spec.features)
    x_train, x_test = _model_frame(train, spec, attributes), _model_frame(test, spec, attributes)
    y_train = train["label"].to_numpy().astype(int)
    groups = sensitive_feature(train, attributes)

    if method in ("group_thresholds", "threshold_optimizer"):
        train_scores = (base_model.predict_proba(x_train[features])[:, 1] if base_train_scores is None
                        else np.asarray(base_train_scores, dtype=float))
        if method == "group_thresholds":
            flagged = train_scores >= operating_threshold
            target = float(flagged[y_train == 1].mean()) if (y_train == 1).any() else 0.0
            thresholds = _thresholds_for_recall(train_scores, y_train, groups, target, min_positives)
            params = {"target_recall": round(target, 4), "min_positives": min_positives}
        else:
            from fairlearn.postprocessing import ThresholdOptimizer

            optimizer = ThresholdOptimizer(
                estimator=_FrozenScorer(train_scores), constraints=constraint,
                objective="balanced_accuracy_score", prefit=True, predict_method="predict_proba",
            )
            index = pd.DataFrame({"row": np.arange(len(train_scores))})
            optimizer.fit(index, y_train, sensitive_features=groups.to_numpy())
            # fairlearn 0.15 has no public API for the randomised rule's probabilities: ``predict`` draws
            # labels from them, so only the private ``_pmf_predict`` gives each row's P(alert) exactly
            pmf = optimizer._pmf_predict(index, sensitive_features=groups.to_numpy())[:, 1]
            counts = groups.value_counts()
            rates = {g: float(pmf[(groups == g).to_numpy()].mean()) for g in counts.index if counts[g] > 0}
            thresholds = _thresholds_for_selection(train_scores, groups, rates)
            params = {"objective": "balanced_accuracy_score", "constraint": constraint,
                      "group_selection_rates": {g: round(r, 4) for g, r in rates.items()}}
        model = GroupThresholdModel(base=base_model, feature_columns=tuple(features), attributes=attributes,
                                    thresholds=thresholds, operating_threshold=float(operating_threshold)).fit()
        params = {**params, "group_thresholds": {g: round(t, 5) for g, t in thresholds.items()}}
        test_scores = (model.predict_proba(x_test)[:, 1] if base_test_scores is None
                       else model.adjust(base_test_scores, x_test))
        return MitigationResult(method, model, float(operating_threshold), test_scores, True, attributes, params)

    # exponentiated gradient over a logistic regression, on (a sample of) the training split
    from fairlearn import reductions

    rng = np.random.default_rng(seed)
    rows = np.arange(len(x_train))
    if rows.size > eg_max_rows:
        rows = np.sort(rng.choice(rows, size=eg_max_rows, replace=False))
    lr_pipeline = modelling.build_logistic_regression(spec, modelling.LogisticRegressionParams(seed=seed))
    preprocess = lr_pipeline.named_steps["preprocess"].fit(x_train[features].iloc[rows])
    Z = preprocess.transform(x_train[features].iloc[rows])
    Z = Z.toarray() if hasattr(Z, "toarray") else np.asarray(Z)
    moment = getattr(reductions, _CONSTRAINTS[constraint])()
    oracle = REDUCTION_ORACLE_PARAMS
    reduction = reductions.ExponentiatedGradient(
        reduction_oracle.SparseLogisticRegression(C=oracle.C, max_iter=oracle.max_iter, class_weight=oracle.class_weight,
                                                  random_state=seed),
        constraints=moment,
        max_iter=eg_max_iter,
    )
    reduction.fit(Z, y_train[rows], sensitive_features=groups.to_numpy()[rows])
    keep = [i for i, w in enumerate(reduction.weights_) if w > 0]
    predictors = [reduction_oracle.plain_logistic_regression(reduction.predictors_[i]) for i in keep]
    weights = [float(reduction.weights_.iloc[i]) for i in keep]
    model = ExponentiatedGradientModel(preprocess=preprocess, predictors=predictors, weights=weights,
                                       feature_columns=tuple(features)).fit()
    train_scores = model.predict_proba(x_train)[:, 1]
    threshold = evaluation.operating_threshold(y_train, train_scores, strategy=spec.threshold_strategy,
                                               value=spec.threshold_value)
    params = {"constraint": constraint, "base_estimator": "logistic_regression", "eg_max_iter": eg_max_iter,
              "n_predictors": len(predictors), "train_rows_used": int(rows.size)}
    return MitigationResult(method, model, float(threshold), model.predict_proba(x_test)[:, 1], False,
                            attributes, params)


class _FrozenScorer(BaseEstimator, ClassifierMixin):
    """Pre-computed training scores, looked up by row index: lets ThresholdOptimizer fit without refitting."""

    def __init__(self, scores=None):
        self.scores = scores

    def fit(self, X=None, y=None):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        s = np.asarray(self.scores)[np.asarray(X["row"], dtype=int)]
        return np.column_stack([1 - s, s])

    def __sklearn_is_fitted__(self) -> bool:
        return True

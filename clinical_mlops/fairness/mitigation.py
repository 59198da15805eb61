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

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score

from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.fairness import audit as fairness, reduction_oracle
from clinical_mlops.training import modelling
from clinical_mlops.training.params import REDUCTION_ORACLE_PARAMS
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy

__all__ = [
    "METHODS",
    "ExponentiatedGradientModel",
    "GroupThresholdModel",
    "MitigationResult",
    "compare_mitigations",
    "fit_mitigation",
    "sensitive_feature",
]

METHODS: dict[str, dict[str, object]] = {
    "group_thresholds": {"kind": "post-processing", "needs_sensitive_attribute": True},
    "threshold_optimizer": {"kind": "post-processing", "needs_sensitive_attribute": True},
    "exponentiated_gradient": {"kind": "in-processing", "needs_sensitive_attribute": False},
}
_CONSTRAINTS = {
    "true_positive_rate_parity": "TruePositiveRateParity",
    "equalized_odds": "EqualizedOdds",
    "demographic_parity": "DemographicParity",
    "false_positive_rate_parity": "FalsePositiveRateParity",
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
    """Fit one mitigation on ``train`` and score ``test``; see the module docstring. ``base_train_scores`` /
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


def _tradeoff_row(label: str, kind: str, needs: bool, y: np.ndarray, scores: np.ndarray, threshold: float,
                  audit: fairness.FairnessAudit, slice_name: str, group: str) -> dict:
    flagged = scores >= threshold
    gap = audit.disparity(slice_name, group, "recall_gap") or {"estimate": np.nan, "lower": np.nan, "upper": np.nan}
    judged = audit.verdicts[(audit.verdicts["rule"] == "recall_gap") & (audit.verdicts["verdict"] != "insufficient_evidence")]
    return {
        "method": label,
        "kind": kind,
        "needs_sensitive_attribute": needs,
        "auroc": float(roc_auc_score(y, scores)) if 0 < y.sum() < y.size else float("nan"),
        "recall": float(flagged[y == 1].mean()) if (y == 1).any() else float("nan"),
        "alerts_per_100": float(100 * flagged.mean()),
        "recall_gap": gap["estimate"],
        "recall_gap_lower": gap["lower"],
        "recall_gap_upper": gap["upper"],
        "max_abs_recall_gap": float(judged["estimate"].abs().max()) if not judged.empty else float("nan"),
        "fails": int((audit.verdicts["verdict"] == "fail").sum()),
        "blocking_fails": int(((audit.verdicts["verdict"] == "fail") & audit.verdicts["blocking"]).sum()),
    }


@dataclass
class Comparison:
    """The trade-off table and every fitted option; ``chosen`` is the one to register."""

    table: pd.DataFrame
    results: dict[str, MitigationResult]
    audits: dict[str, fairness.FairnessAudit]
    chosen: str | None
    reason: str


def compare_mitigations(
    *,
    base_model,
    base_test_scores: np.ndarray,
    train: pd.DataFrame,
    test: pd.DataFrame,
    spec: CohortSpec,
    policy: Policy,
    slice_name: str,
    group: str,
    operating_threshold: float,
    methods: Sequence[str] | None = None,
    n_bootstrap: int | None = None,
    seed: int = 7,
    eg_max_iter: int = 20,
) -> Comparison:
    """Fit each method and tabulate overall AUROC, recall and alerts against the recall gap.

    The option registered is the one with no blocking failure and an AUROC drop within
    ``change_control.acceptance.max_auroc_drop`` that leaves the smallest |recall gap| for the
    target group; if none qualifies, the one with the smallest gap (the reviewer sees why).
    """
    attributes = tuple(slice_name.split(fairness.INTERSECTION_SEPARATOR))
    methods = tuple(methods or policy.fairness.mitigation.methods)
    y = test["label"].to_numpy().astype(int)
    audit_cols = [a for a in policy.fairness.attribute_names if a in test.columns]
    base_frame = test[audit_cols].reset_index(drop=True).assign(label=y, score=base_test_scores)
    base_audit = fairness.audit(base_frame, threshold=operating_threshold, policy=policy, n_bootstrap=n_bootstrap)
    rows = [_tradeoff_row("none (candidate)", "—", False, y, base_test_scores, operating_threshold, base_audit,
                          slice_name, group)]
    results, audits = {}, {"none": base_audit}
    skipped: dict[str, str] = {}
    post = any(METHODS.get(m, {}).get("kind") == "post-processing" for m in methods)
    train_scores = modelling.predict_risk(base_model, train, spec) if post else None  # once for all of them
    for method in methods:
        try:
            result = fit_mitigation(method, base_model=base_model, train=train, test=test, spec=spec,
                                    attributes=attributes, operating_threshold=operating_threshold,
                                    constraint=policy.fairness.mitigation.constraint, seed=seed,
                                    eg_max_iter=eg_max_iter, base_train_scores=train_scores,
                                    base_test_scores=base_test_scores)
        except ValueError as exc:  # e.g. a group with a single outcome class in training
            skipped[method] = f"not applicable here: {exc}"
            continue
        frame = test[audit_cols].reset_index(drop=True).assign(label=y, score=result.test_scores)
        result_audit = fairness.audit(frame, threshold=result.operating_threshold, policy=policy,
                                      n_bootstrap=n_bootstrap)
        results[method], audits[method] = result, result_audit
        rows.append(_tradeoff_row(method, result.kind, result.needs_sensitive_attribute, y, result.test_scores,
                                  result.operating_threshold, result_audit, slice_name, group))
    table = pd.DataFrame(rows)
    base_auroc = table.loc[0, "auroc"]
    candidates = table.iloc[1:].copy()
    candidates["auroc_drop"] = base_auroc - candidates["auroc"]
    max_drop = policy.change_control.acceptance.max_auroc_drop
    ok = candidates[(candidates["blocking_fails"] == 0) & (candidates["auroc_drop"] <= max_drop)]
    if not ok.empty:
        chosen = ok.loc[ok["recall_gap"].abs().idxmin(), "method"]
        reason = (f"no blocking failure, AUROC drop within {max_drop:g}, and the smallest |recall gap| "
                  f"for {group}")
    elif not candidates.empty:
        chosen = candidates.loc[candidates["recall_gap"].abs().idxmin(), "method"]
        reason = (f"no option met every acceptance criterion; registered the smallest |recall gap| for {group} "
                  "for review")
    else:
        chosen, reason = None, "no mitigation method configured"
    table["auroc_change"] = table["auroc"] - base_auroc
    table["chosen"] = table["method"] == chosen
    if skipped:
        reason += "; " + "; ".join(f"{m} {why}" for m, why in skipped.items())
    return Comparison(table=table, results=results, audits=audits, chosen=chosen, reason=reason)

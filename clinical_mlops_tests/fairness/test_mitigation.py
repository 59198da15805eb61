"""Mitigation: each option is fitted on training rows and reduces the recall gap on held-out rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.fairness import mitigation, reduction_oracle
from clinical_mlops.fairness.mitigation._fit import _model_frame
from clinical_mlops.training import modelling
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import for_cohort, load_policy
from clinical_mlops_tests.conftest import SYNTHETIC

SPEC = CohortSpec(
    name="toy", title="toy", intended_use="", target_column="y", target_sql="", target_definition="", target_source="",
    exclusions=(), numeric_features=("prior_visits", "severity"), categorical_features=("unit",),
    sensitive_attributes=("race", "gender", "age_band"), split_strategy="patient_hash", test_fraction=0.3,
    split_seed=0, threshold_strategy="top_fraction", threshold_value=0.2, spec_hash="toy", source=SYNTHETIC,
)
"""A toy cohort on the synthetic source: its sensitive attributes (race, gender, age band) are that contract's."""


def _cohort(n: int, seed: int) -> pd.DataFrame:
    """True risk from prior visits and severity; one group's prior visits are under-recorded (fragmented care)."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["Caucasian", "AfricanAmerican", "Hispanic"], p=[0.7, 0.24, 0.06], size=n)
    visits = rng.poisson(1.2, size=n).astype(float)
    severity = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.6 + 0.8 * visits + 0.5 * severity)))).astype(int)
    recorded = np.where(race == "AfricanAmerican", visits * (rng.random(n) < 0.2), visits)
    return pd.DataFrame({
        "prior_visits": recorded, "severity": severity, "unit": rng.choice(["a", "b", "c"], size=n),
        "race": race, "gender": rng.choice(["Female", "Male"], size=n), "age_band": "[70-80)", "label": y,
    })


@pytest.fixture(scope="module")
def fitted():
    train, test = _cohort(12_000, 1), _cohort(8_000, 2)
    model = modelling.fit(modelling.build_logistic_regression(SPEC, modelling.LogisticRegressionParams()), train, SPEC)
    threshold = evaluation.operating_threshold(None, modelling.predict_risk(model, train, SPEC), value=0.2)
    return train, test, model, threshold


def test_group_thresholds_fold_into_one_operating_threshold(fitted):
    train, test, model, threshold = fitted
    result = mitigation.fit_mitigation("group_thresholds", base_model=model, train=train, test=test, spec=SPEC,
                                       attributes=("race",), operating_threshold=threshold)
    assert result.needs_sensitive_attribute and result.operating_threshold == threshold
    thresholds = result.params["group_thresholds"]
    assert thresholds["AfricanAmerican"] < thresholds["Caucasian"]
    base = modelling.predict_risk(model, test, SPEC)
    t_group = test["race"].map(lambda g: result.model.thresholds.get(g, threshold)).to_numpy()
    np.testing.assert_array_equal(result.test_scores >= threshold, base >= t_group)
    # a deployable model: serialises with skops (as MLflow logs it) and predicts the same
    blob = sio.dumps(result.model)
    loaded = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    x = _model_frame(test, SPEC, ("race",))
    np.testing.assert_allclose(loaded.predict_proba(x)[:, 1], result.test_scores)


def test_every_mitigation_reduces_the_recall_gap_on_held_out_data(fitted):
    train, test, model, threshold = fitted
    policy = for_cohort(load_policy(), SPEC)  # as the fairness steps apply it
    comparison = mitigation.compare_mitigations(
        base_model=model, base_test_scores=modelling.predict_risk(model, test, SPEC), train=train, test=test,
        spec=SPEC, policy=policy, slice_name="race", group="AfricanAmerican", operating_threshold=threshold,
        n_bootstrap=40, eg_max_iter=8,
    )
    table = comparison.table.set_index("method")
    before = table.loc["none (candidate)", "recall_gap"]
    assert before < -0.15 and table.loc["none (candidate)", "blocking_fails"] > 0
    for method in ("group_thresholds", "threshold_optimizer", "exponentiated_gradient"):
        assert abs(table.loc[method, "recall_gap"]) < abs(before), method
    assert abs(table.loc["group_thresholds", "recall_gap"]) < 0.1
    assert table.loc["group_thresholds", "needs_sensitive_attribute"]
    assert not table.loc["exponentiated_gradient", "needs_sensitive_attribute"]
    assert comparison.chosen in comparison.results and table.loc[comparison.chosen, "chosen"]
    assert {"auroc", "recall", "alerts_per_100", "recall_gap_lower", "recall_gap_upper"} <= set(table.columns)


def test_unknown_method_is_refused(fitted):
    train, test, model, threshold = fitted
    with pytest.raises(ValueError, match="unknown mitigation"):
        mitigation.fit_mitigation("magic", base_model=model, train=train, test=test, spec=SPEC, attributes=("race",),
                                  operating_threshold=threshold)


def test_given_base_scores_give_the_same_post_processed_scores(fitted):
    """Scores the caller already has (compare_mitigations passes them) change nothing."""
    train, test, model, threshold = fitted
    given = {"base_train_scores": modelling.predict_risk(model, train, SPEC),
             "base_test_scores": modelling.predict_risk(model, test, SPEC)}
    for method in ("group_thresholds", "threshold_optimizer"):
        scored = mitigation.fit_mitigation(method, base_model=model, train=train, test=test, spec=SPEC,
                                           attributes=("race",), operating_threshold=threshold)
        reused = mitigation.fit_mitigation(method, base_model=model, train=train, test=test, spec=SPEC,
                                           attributes=("race",), operating_threshold=threshold, **given)
        np.testing.assert_array_equal(reused.test_scores, scored.test_scores)
        assert reused.params == scored.params


def test_exponentiated_gradient_registers_plain_logistic_regressions(fitted):
    """The sparse-input fit is an implementation detail: the deployable model holds plain estimators and
    serialises with skops like any other."""
    from sklearn.linear_model import LogisticRegression

    train, test, model, threshold = fitted
    result = mitigation.fit_mitigation("exponentiated_gradient", base_model=model, train=train, test=test, spec=SPEC,
                                       attributes=("race",), operating_threshold=threshold, eg_max_iter=6)
    assert result.model.predictors and all(type(p) is LogisticRegression or not isinstance(p, LogisticRegression)
                                           for p in result.model.predictors)
    blob = sio.dumps(result.model)
    loaded = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    x = _model_frame(test, SPEC, ("race",))
    np.testing.assert_allclose(loaded.predict_proba(x)[:, 1], result.test_scores)


def test_sparse_fit_matches_the_dense_logistic_regression():
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = np.hstack([rng.normal(size=(2_000, 3)), (rng.random((2_000, 20)) < 0.1).astype(float)])
    y = (rng.random(2_000) < 1 / (1 + np.exp(-X[:, 0] - X[:, 4]))).astype(int)
    w = rng.random(2_000) * 2
    dense = LogisticRegression(C=0.5, max_iter=300, tol=1e-8).fit(X, y, sample_weight=w)
    fitted = reduction_oracle.SparseLogisticRegression(C=0.5, max_iter=300, tol=1e-8).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(fitted.coef_, dense.coef_, atol=1e-5)
    np.testing.assert_allclose(fitted.predict_proba(sparse.csr_matrix(X)), dense.predict_proba(X), atol=1e-6)

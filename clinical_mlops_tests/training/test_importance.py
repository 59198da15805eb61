"""Permutation importance (clinical_mlops.training.importance) for root cause: on the encoded columns it equals
permuting the raw columns, and the batched version equals scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd
from sklearn.inspection import permutation_importance

from clinical_mlops.training import modelling
from clinical_mlops_tests.fairness.test_mitigation import SPEC, _cohort


def test_encoded_permutation_importance_is_identical_to_the_raw_one():
    train, test = _cohort(3_000, 1), _cohort(800, 2)
    params = modelling.GradientBoostingParams(max_iter=20)
    model = modelling.fit(modelling.build_gradient_boosting(SPEC, params), train, SPEC)
    X, y = modelling.model_input(test, SPEC), test["label"].to_numpy()
    estimator, matrix = modelling.encoded_for_permutation(model, X)
    assert estimator is model.steps[-1][1] and isinstance(matrix, np.ndarray) and matrix.shape == X.shape
    raw = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=3, random_state=7, n_jobs=1)
    encoded = permutation_importance(estimator, matrix, y, scoring="roc_auc", n_repeats=3, random_state=7, n_jobs=1)
    np.testing.assert_array_equal(encoded.importances, raw.importances)


def test_a_model_that_is_not_encoded_column_by_column_is_left_alone():
    train, test = _cohort(2_000, 1), _cohort(300, 2)
    one_hot = modelling.fit(modelling.build_logistic_regression(SPEC, modelling.LogisticRegressionParams()), train,
                            SPEC)
    X = modelling.model_input(test, SPEC)
    estimator, matrix = modelling.encoded_for_permutation(one_hot, X)
    assert estimator is one_hot and matrix is X
    reordered = X[list(reversed(X.columns))]
    boosted = modelling.fit(modelling.build_gradient_boosting(SPEC, modelling.GradientBoostingParams(max_iter=5)),
                            train, SPEC)
    estimator, matrix = modelling.encoded_for_permutation(boosted, reordered)
    assert estimator is boosted and isinstance(matrix, pd.DataFrame)


def test_batched_permutation_importance_equals_sklearns_on_every_input_kind():
    """Same permutations, same AUROCs: encoded matrix, raw frame through the pipeline, a one-hot model."""
    from clinical_mlops.training import importance

    train, test = _cohort(3_000, 1), _cohort(700, 2)
    boosted = modelling.fit(modelling.build_gradient_boosting(SPEC, modelling.GradientBoostingParams(max_iter=20)),
                            train, SPEC)
    linear = modelling.fit(modelling.build_logistic_regression(SPEC, modelling.LogisticRegressionParams()), train,
                           SPEC)
    X, y = modelling.model_input(test, SPEC), test["label"].to_numpy()
    estimator, matrix = modelling.encoded_for_permutation(boosted, X)
    for model, data in ((estimator, matrix), (boosted, X), (linear, X)):
        expected = permutation_importance(model, data, y, scoring="roc_auc", n_repeats=3, random_state=7, n_jobs=1)
        got = importance.permutation_importance(model, data, y, n_repeats=3, random_state=7,
                                                max_rows=5 * len(y))  # several blocks, one ending early
        assert got.importances.shape == (X.shape[1], 3)
        np.testing.assert_allclose(got.importances, expected.importances, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.importances_mean, expected.importances_mean, rtol=0, atol=1e-12)
    assert np.abs(expected.importances).max() > 0  # the comparison is not between all-zero tables


def test_the_rank_auroc_is_roc_auc_score_with_ties():
    from sklearn.metrics import roc_auc_score

    from clinical_mlops.training import importance

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.normal(size=500) + y, 1)  # many ties
    assert importance.auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    with pytest.raises(ValueError, match="both outcome classes"):
        importance.auroc(np.zeros(5), np.arange(5.0))

"""Root cause's permutation importance on the encoded columns equals permuting the raw columns."""

from __future__ import annotations

import numpy as np
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

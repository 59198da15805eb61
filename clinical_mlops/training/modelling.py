"""scikit-learn pipelines for tabular clinical risk models.

Two model families: a logistic-regression baseline (always trained, GMLP principle 6) and a
gradient-boosted candidate. Hyperparameters and seeds come from the caller's config so they
are recorded wherever the model is; their defaults are the fields of
:class:`LogisticRegressionParams` and :class:`GradientBoostingParams`, the one place they are
defined (in :mod:`.params`, re-exported here; the Dagster configs and the benchmark take theirs from there). A model is registered
in MLflow under :func:`registered_model_name`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.training.params import GradientBoostingParams, LogisticRegressionParams, registered_model_name

__all__ = [
    "GradientBoostingParams", "LogisticRegressionParams", "build_gradient_boosting", "build_logistic_regression",
    "fit", "model_input", "predict_risk", "registered_model_name",
]


def _categorical_input(frame: pd.DataFrame, spec: CohortSpec) -> pd.DataFrame:
    return frame[list(spec.features)].astype({c: "object" for c in spec.categorical_features}).astype(
        {c: "float64" for c in spec.numeric_features}
    )


def build_logistic_regression(spec: CohortSpec, params: LogisticRegressionParams) -> Pipeline:
    """Scaled numerics + one-hot categoricals (rare levels pooled) → logistic regression."""
    preprocess = ColumnTransformer(
        [
            ("numeric", StandardScaler(), list(spec.numeric_features)),
            (
                "categorical",
                OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20, sparse_output=True),
                list(spec.categorical_features),
            ),
        ]
    )
    model = LogisticRegression(
        C=params.C, max_iter=params.max_iter, class_weight=params.class_weight, random_state=params.seed
    )
    return Pipeline([("preprocess", preprocess), ("model", model)])


def build_gradient_boosting(spec: CohortSpec, params: GradientBoostingParams) -> Pipeline:
    """Ordinal-encoded categoricals with native categorical splits → histogram gradient boosting."""
    n_numeric = len(spec.numeric_features)
    preprocess = ColumnTransformer(
        [
            ("numeric", "passthrough", list(spec.numeric_features)),
            (
                "categorical",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
                    min_frequency=20, max_categories=250,
                ),
                list(spec.categorical_features),
            ),
        ]
    )
    categorical_mask = [False] * n_numeric + [True] * len(spec.categorical_features)
    model = HistGradientBoostingClassifier(
        max_iter=params.max_iter,
        learning_rate=params.learning_rate,
        max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        categorical_features=categorical_mask,
        early_stopping=False,
        random_state=params.seed,
    )
    return Pipeline([("preprocess", preprocess), ("model", model)])


def model_input(frame: pd.DataFrame, spec: CohortSpec) -> pd.DataFrame:
    """The feature columns in declared order with declared types: what the model signature says."""
    return _categorical_input(frame, spec)


def fit(pipeline: Pipeline, frame: pd.DataFrame, spec: CohortSpec) -> Pipeline:
    return pipeline.fit(model_input(frame, spec), frame["label"].to_numpy())


def predict_risk(pipeline: Pipeline, frame: pd.DataFrame, spec: CohortSpec) -> np.ndarray:
    """Probability of the positive class for each row."""
    return pipeline.predict_proba(model_input(frame, spec))[:, 1]

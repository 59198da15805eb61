"""The service's compiled scorer gives exactly the pipeline's risk, or is not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.scoring import champion as scoring
from clinical_mlops.scoring.service._compiled import compile_pipeline
from clinical_mlops.training import modelling

COHORT = "synthetic_diabetes130_readmission_30d"


@pytest.fixture(scope="module")
def spec():
    return load_cohort(COHORT)


def _frame(spec, rows: int, seed: int) -> pd.DataFrame:
    """Feature rows with frequent, rare (pooled as infrequent) and many distinct category values."""
    rng = np.random.default_rng(seed)
    data: dict = {name: rng.integers(0, 12, rows).astype(float) for name in spec.numeric_features}
    for k, name in enumerate(spec.categorical_features):
        common = rng.choice([f"c{i}" for i in range(4 + k)], rows)
        rare = rng.choice([f"rare{i}" for i in range(30)], rows)
        data[name] = np.where(rng.random(rows) < 0.1, rare, common)
    frame = pd.DataFrame(data)
    signal = frame[spec.numeric_features[0]] + (frame[spec.categorical_features[0]] == "c1") * 4
    frame["label"] = (signal + rng.normal(0, 3, rows) > 9).astype(int)
    return frame


@pytest.fixture(scope="module")
def fitted(spec):
    with threadpool_limits(limits=1):
        pipeline = modelling.build_gradient_boosting(spec, modelling.GradientBoostingParams(max_iter=40, seed=3))
        return modelling.fit(pipeline, _frame(spec, 3_000, 1), spec)


def _records(spec, frame: pd.DataFrame) -> list[dict]:
    return [scoring.canonical_features(row, spec) for row in frame.to_dict("records")]


def test_the_compiled_scorer_gives_the_pipelines_exact_risk(spec, fitted):
    compiled = compile_pipeline(fitted, spec)
    assert compiled is not None
    unseen = _frame(spec, 600, 2)
    unseen.loc[::7, spec.categorical_features[1]] = "never seen in training"
    records = _records(spec, unseen)
    expected = modelling.predict_risk(fitted, pd.DataFrame(records), spec)
    assert np.array_equal(compiled.score(records), expected)  # identical, not approximately equal
    for n in (1, 2, 8):  # any batch size gives each row the same risk
        assert np.array_equal(compiled.score(records[:n]), expected[:n])


def test_a_scoring_model_uses_the_compiled_scorer_with_the_same_result(spec, fitted):
    ref = scoring.ModelRef(name="m", version="1", run_id="r", source="alias", model_card_sha256=None,
                           operating_threshold=0.5)
    records = _records(spec, _frame(spec, 50, 4))
    plain = scoring.ScoringModel(ref=ref, pipeline=fitted, spec=spec)
    fast = scoring.ScoringModel(ref=ref, pipeline=fitted, spec=spec, compiled=compile_pipeline(fitted, spec))
    assert np.array_equal(plain.score_records(records), fast.score_records(records))
    assert np.array_equal(fast.score_records(records), plain.score(pd.DataFrame(records)))


def test_another_model_type_is_not_compiled(spec):
    frame = _frame(spec, 400, 5)
    logistic = modelling.fit(modelling.build_logistic_regression(spec, modelling.LogisticRegressionParams()),
                             frame, spec)
    assert compile_pipeline(logistic, spec) is None


def test_a_scorer_that_differs_from_the_pipeline_on_a_probe_row_is_refused(spec, fitted, monkeypatch):
    real = modelling.predict_risk
    monkeypatch.setattr(modelling, "predict_risk",
                        lambda pipeline, frame, spec: real(pipeline, frame, spec) + np.finfo(float).eps)
    assert compile_pipeline(fitted, spec) is None

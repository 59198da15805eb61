"""The training subsample (``max_training_rows``): whole patients, deterministic for a seed, and recorded in
MLflow, the warehouse and the model card (clinical_mlops.features.build.load_training_sample, as
clinical_mlops.training.fit.train_and_register uses it).

On conftest's ``featured``: 5,000 synthetic encounters, validated, featurised and split.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from clinical_mlops.audit import model_card
from clinical_mlops.core import tracking
from clinical_mlops.features import build as features
from clinical_mlops.training import fit as training, modelling

CHUNK = 1_000


def test_training_subsample_is_patient_grouped_deterministic_and_recorded(con, workspace, featured):
    spec = featured
    full = features.load_training_sample(con, spec, max_rows=10**9, seed=1)
    assert not full.subsampled and full.used_rows == full.full_rows
    cap = full.full_rows // 3
    draws = [features.load_training_sample(con, spec, max_rows=cap, seed=s) for s in (5, 5, 6)]
    assert draws[0].frame["encounter_id"].tolist() == draws[1].frame["encounter_id"].tolist()
    assert set(draws[0].frame["encounter_id"]) != set(draws[2].frame["encounter_id"])
    sample = draws[0]
    assert sample.subsampled and 0 < sample.used_rows <= cap and sample.full_rows == full.full_rows
    per_patient = full.frame.groupby("patient_key").size()
    used = sample.frame.groupby("patient_key").size()
    assert (per_patient.loc[used.index] == used).all()  # whole patients only

    params = modelling.LogisticRegressionParams(max_iter=200)
    outcome = training.train_and_register(
        con, spec, role="baseline", pipeline=modelling.build_logistic_regression(spec, params),
        params=params.as_dict(), tracking_uri=workspace.tracking_uri, artifact_root=workspace.artifacts,
        max_training_rows=cap, subsample_seed=5, chunk_rows=CHUNK,
    )
    assert outcome.train_rows_used == sample.used_rows and outcome.train_rows == full.full_rows
    test_rows = con.execute("SELECT count(*) FROM ml.splits WHERE cohort = ? AND split = 'test'", [spec.name]).fetchone()[0]
    predicted = con.execute(
        """SELECT count(*), count(DISTINCT p.encounter_id) FROM ml.predictions p
           JOIN ml.splits s ON s.cohort = p.cohort AND s.encounter_id = p.encounter_id AND s.split = 'test'
           WHERE p.model_version = ?""", [outcome.model.version]).fetchone()
    assert predicted == (test_rows, test_rows) == (outcome.test_rows, outcome.test_rows)

    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    run_params = MlflowClient().get_run(outcome.model.run_id).data.params
    assert run_params["train_rows_used"] == str(sample.used_rows)
    assert run_params["train_rows"] == str(full.full_rows)
    assert run_params["subsample_seed"] == "5" and run_params["max_training_rows"] == str(cap)
    recorded = con.execute(
        "SELECT train_rows_used, train_rows_full, subsample_seed, subsampled FROM ml.training_samples "
        "WHERE model_version = ?", [outcome.model.version]).fetchone()
    assert recorded == (sample.used_rows, full.full_rows, 5, True)
    text = model_card.sample_text(model_card.training_sample(con, outcome.model.name, outcome.model.version))
    assert f"{sample.used_rows:,} of {full.full_rows:,}" in text and "seed 5" in text

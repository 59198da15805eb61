"""External evaluation of the champion (else the latest candidate) on an extract it was not trained on.

A self-contained warehouse on the ``sepsis_survival`` contract with synthetic rows (no shared data):
a training extract, a later extract, a file named as the contract's external site, one where the risk
runs the other way, and one with no death. The model is a small logistic regression.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, precision_score, recall_score, roc_auc_score

from clinical_mlops.core import evidence, tracking, warehouse
from clinical_mlops.defs.evaluation.assets import build_external_evaluation
from clinical_mlops.evaluation import external, metrics, models, steps
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH
from clinical_mlops.sources.contract import load_source
from clinical_mlops.training import fit, modelling
from clinical_mlops_tests.conftest import Workspace
from clinical_mlops_tests.helpers import land_and_validate

SOURCE = "sepsis_survival"
COHORT = "sepsis_mortality"
EXTERNAL_FILE = "s41598-020-73558-3_sepsis_survival_validation_cohort.csv"  # the contract's external_site
SETTINGS = steps.EvaluationSettings(n_bootstrap=100, seed=3, min_group_size=50)


def _episodes(n: int, seed: int, *, direction: float = 1.0, deaths: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 96, n)
    p = 1 / (1 + np.exp(-(-2.5 + direction * 0.08 * (age - 60))))
    died = rng.random(n) < p if deaths else np.zeros(n, dtype=bool)
    return pd.DataFrame({"age_years": age, "sex_0male_1female": rng.integers(0, 2, n),
                         "episode_number": rng.integers(1, 4, n), "hospital_outcome_1alive_0dead": (~died).astype(int)})


def _land(ws: Workspace, frames: dict[str, pd.DataFrame]) -> None:
    source = load_source(SOURCE)
    (ws.landing / SOURCE).mkdir(parents=True, exist_ok=True)
    with warehouse.connect(ws.warehouse) as con:
        for name, frame in frames.items():
            land_and_validate(con, frame, ws.landing / SOURCE / name, source=source, pseudonym_key=b"k")


@dataclass(frozen=True)
class Built:
    ws: Workspace
    outcome: fit.TrainingOutcome


def _workspace(root: Path, mlflow_template: Path) -> Workspace:
    ws = Workspace(root)
    (root / "mlflow").mkdir(parents=True)
    shutil.copyfile(mlflow_template, root / "mlflow" / "mlflow.db")
    return ws


@pytest.fixture(scope="module")
def built(tmp_path_factory, mlflow_template) -> Built:
    """Train on ``primary.csv`` only, then land the later extracts and rebuild the features (no retraining)."""
    ws = _workspace(tmp_path_factory.mktemp("external"), mlflow_template)
    spec = load_cohort(COHORT)
    _land(ws, {"primary.csv": _episodes(3000, 1)})
    params = modelling.LogisticRegressionParams()
    with warehouse.connect(ws.warehouse) as con:
        features.build_features(con, spec)
        features.assign_split(con, spec)
        outcome = fit.train_and_register(con, spec, role="candidate", pipeline=modelling.build_logistic_regression(
            spec, params), params=params.as_dict(), tracking_uri=ws.tracking_uri, artifact_root=ws.artifacts)
        models.evaluate_model(con, spec, model_name=outcome.model.name, model_version=outcome.model.version,
                              threshold=outcome.operating_threshold, n_boot=50, seed=1, min_group_size=50, plots=False)
    _land(ws, {"later.csv": _episodes(900, 2), EXTERNAL_FILE: _episodes(700, 3),
               "inverted.csv": _episodes(900, 4, direction=-1.0), "no_deaths.csv": _episodes(200, 5, deaths=False)})
    with warehouse.connect(ws.warehouse) as con:
        features.build_features(con, spec)
    return Built(ws, outcome)


def _step(ws: Workspace, extract_id: str, min_auroc: float | None = 0.6) -> steps.ExternalStep:
    with warehouse.connect(ws.warehouse) as con:
        return steps.evaluate_external(con, load_cohort(COHORT), extract_id, tracking_uri=ws.tracking_uri,
                                       artifact_root=ws.artifacts, reports_dir=ws.root / "reports",
                                       settings=SETTINGS, min_auroc=min_auroc)


def _plain_figures(built: Built, extract_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of the extract's rows, scored by the registered model loaded independently."""
    spec = load_cohort(COHORT)
    tracking.configure(built.ws.tracking_uri, built.ws.artifacts)
    pipeline = tracking.load_model(f"models:/{built.outcome.model.name}/{built.outcome.model.version}")
    with warehouse.connect(built.ws.warehouse, read_only=True) as con:
        frame = features.load_features(con, spec, where=f"extract_id = '{extract_id}'")
    return frame["label"].to_numpy(), modelling.predict_risk(pipeline, frame, spec)


def test_external_site_figures_equal_plain_sklearn_on_the_same_rows(built):
    step = _step(built.ws, EXTERNAL_FILE)
    result = step.evaluation
    assert step.relation == "external_site" and step.model_kind == "latest_candidate"
    assert step.model == f"{built.outcome.model.name} v{built.outcome.model.version}"
    y, score = _plain_figures(built, EXTERNAL_FILE)
    flagged = score >= built.outcome.operating_threshold
    assert (result.n, result.n_positive) == (len(y), int(y.sum())) and len(y) == 700
    assert result.overall("auroc").estimate == pytest.approx(roc_auc_score(y, score), abs=1e-9)
    assert result.overall("tpr").estimate == pytest.approx(recall_score(y, flagged), abs=1e-9)
    assert result.overall("precision").estimate == pytest.approx(precision_score(y, flagged), abs=1e-9)
    assert result.overall("brier").estimate == pytest.approx(brier_score_loss(y, score), abs=1e-9)
    auroc = result.overall("auroc")
    assert auroc.lower < auroc.estimate < auroc.upper
    assert step.evidence.status == evidence.PASS, step.evidence.reason  # a 0.8-ish AUROC at n = 700 clears 0.6

    with warehouse.connect(built.ws.warehouse, read_only=True) as con:
        stored = con.execute("SELECT * FROM ml.external_evaluations WHERE extract_id = ?", [EXTERNAL_FILE]).df()
        held = con.execute("SELECT estimate FROM ml.evaluation_metrics WHERE model_name = ? AND attribute = 'overall' "
                           "AND metric = 'auroc'", [built.outcome.model.name]).fetchone()[0]
    assert set(stored["relation"]) == {"external_site"} and set(stored["model_kind"]) == {"latest_candidate"}
    assert set(stored["source"]) == {SOURCE} and set(stored["attribute"]) == {"overall", "sex", "age_band"}
    row = stored[(stored["attribute"] == "overall") & (stored["metric"] == "auroc")].iloc[0]
    assert (row["n"], row["estimate"]) == (700, pytest.approx(auroc.estimate))
    assert result.held_out["auroc"].estimate == pytest.approx(held)

    report = step.report.read_text()
    assert f"n = 700, positives (died_in_hospital): {result.n_positive}" in report
    assert f"{auroc.estimate:.3f} [{auroc.lower:.3f}, {auroc.upper:.3f}]" in report
    assert f"Held-out AUROC of the same version: {held:.3f}" in report
    assert "| sex | female |" in report


def test_a_later_extract_is_a_later_extract_not_an_external_site(built):
    step = _step(built.ws, "later.csv")
    assert step.relation == "later_extract" and step.evaluation is not None
    assert step.evaluation.n == 900


def test_an_extract_the_model_was_trained_on_is_not_an_external_evaluation(built):
    step = _step(built.ws, "primary.csv")
    assert step.evaluation is None and step.evidence.status == evidence.INSUFFICIENT
    assert step.evidence.reason.startswith("not an external evaluation: the model was trained on this extract")
    assert "Not assessed" in step.report.read_text()
    with warehouse.connect(built.ws.warehouse, read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM ml.external_evaluations WHERE extract_id = 'primary.csv'").fetchone()
    assert stored[0] == 0


def test_an_extract_without_a_death_is_insufficient_evidence(built):
    step = _step(built.ws, "no_deaths.csv")
    assert step.evaluation is None and step.evidence.status == evidence.INSUFFICIENT
    assert "0 positives" in step.evidence.reason


def test_the_verdict_follows_the_interval_against_the_minimum(built):
    inverted = _step(built.ws, "inverted.csv")  # risk runs the other way: AUROC well below 0.5
    assert inverted.evaluation.overall("auroc").upper < 0.6
    assert inverted.evidence.status == evidence.FAIL
    auroc = _step(built.ws, EXTERNAL_FILE).evaluation.overall("auroc")
    straddled = _step(built.ws, EXTERNAL_FILE, min_auroc=(auroc.lower + auroc.upper) / 2)
    assert straddled.evidence.status == evidence.INSUFFICIENT
    assert "straddles" in straddled.evidence.reason and "n = 700" in straddled.evidence.reason


def test_a_wide_interval_says_it_cannot_settle_transport():
    rng = np.random.default_rng(0)
    y = (rng.random(137) < 0.175).astype(int)
    score = np.clip(0.2 + 0.1 * y + rng.normal(0, 0.15, 137), 0.001, 0.999)
    table = metrics.metrics_by_group(y, score, {}, threshold=0.3, n_boot=200, seed=1)
    result = external.ExternalEvaluation(COHORT, SOURCE, "validation.csv", "m", "1", "champion", "external_site",
                                         0.3, table)
    assert result.auroc_width > external.WIDE_AUROC_INTERVAL
    sentence = external.transport_sentence(result, "deaths")
    assert sentence.startswith(f"n = 137 with {y.sum()} deaths: the AUROC interval spans")
    assert sentence.endswith("this extract alone cannot confirm or refute transport.")


def test_the_champion_is_preferred_to_the_latest_candidate(built):
    from mlflow.tracking import MlflowClient

    tracking.configure(built.ws.tracking_uri, built.ws.artifacts)
    name, version = built.outcome.model.name, built.outcome.model.version
    MlflowClient().set_registered_model_alias(name, "champion", version)
    try:
        step = _step(built.ws, "later.csv")
    finally:
        MlflowClient().delete_registered_model_alias(name, "champion")
    assert step.model_kind == "champion" and step.evaluation.model_kind == "champion"


def test_no_model_at_all_is_insufficient_evidence(tmp_path, mlflow_template):
    ws = _workspace(tmp_path, mlflow_template)
    _land(ws, {"primary.csv": _episodes(300, 1)})
    with warehouse.connect(ws.warehouse) as con:
        features.build_features(con, load_cohort(COHORT))
    step = _step(ws, "primary.csv")
    assert step.evidence.status == evidence.INSUFFICIENT and step.model_kind is None
    assert step.evidence.reason.startswith("no model of sepsis_mortality is registered")


def test_the_drift_job_runs_the_external_evaluation_and_training_does_not(defs):
    key = dg.AssetKey([COHORT, "external_evaluation"])
    drift = defs.resolve_job_def(f"drift_job_{SOURCE}")
    assert key in drift.asset_layer.selected_asset_keys
    assert key not in defs.resolve_job_def(f"training_job_{SOURCE}").asset_layer.selected_asset_keys
    assert "external evaluation" in drift.description
    asset = defs.resolve_assets_def(key)
    assert asset.partitions_def.name == f"{SOURCE}_extracts"
    assert load_cohort(COHORT).contract_sha256[:12] in asset.code_versions_by_key[key]


def _materialize(built: Built, instance, extract_id: str, min_auroc: str) -> dg.ExecuteInProcessResult:
    policy = built.ws.root / f"policy_{min_auroc}.yaml"
    policy.write_text(SHIPPED_POLICY_PATH.read_text().replace("min_auroc: 0.60", f"min_auroc: {min_auroc}"))
    return dg.materialize(
        [build_external_evaluation(load_cohort(COHORT))], instance=instance, resources=built.ws.resources(), partition_key=extract_id,
        run_config={"ops": {f"{COHORT}__external_evaluation": {"config": {"policy_path": str(policy),
                                                                        "n_bootstrap": 100}}}},
    )


def test_the_check_fails_when_the_whole_interval_is_below_the_policy_minimum(built):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(f"{SOURCE}_extracts", [EXTERNAL_FILE, "primary.csv"])
    failed = _materialize(built, instance, EXTERNAL_FILE, "0.98")
    (check,) = failed.get_asset_check_evaluations()
    metadata = failed.asset_materializations_for_node(f"{COHORT}__external_evaluation")[0].metadata
    assert check.check_name == steps.EXTERNAL_CHECK and not check.passed
    assert check.metadata["evidence"].value == evidence.FAIL and check.severity == dg.AssetCheckSeverity.WARN
    assert metadata["auroc_upper"].value < 0.98 and metadata["relation"].value == "external_site"
    assert metadata["n"].value == 700 and metadata["model_kind"].value == "latest_candidate"
    assert Path(metadata["report"].value).is_file()
    trained = _materialize(built, instance, "primary.csv", "0.60")
    (check,) = trained.get_asset_check_evaluations()
    assert check.metadata["evidence"].value == evidence.INSUFFICIENT
    assert check.description.startswith("insufficient evidence: not an external evaluation")

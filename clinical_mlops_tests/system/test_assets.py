"""Assets through ``dg.materialize`` on a temporary warehouse, landing zone and MLflow store."""

from __future__ import annotations

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.core import tracking, warehouse
from clinical_mlops.ingestion import uci
from clinical_mlops_tests.conftest import synthetic_assets
from clinical_mlops_tests.helpers import ingest

FAST_MODELS = {
    "ops": {
        "synthetic_diabetes130_readmission_30d__candidate_model": {"config": {"max_iter": 40}},
        "synthetic_diabetes130_readmission_30d__evaluation_asset": {},
    }
}



def _train(defs, workspace, instance, cohort="synthetic_diabetes130_readmission_30d", candidate_iterations=40):
    selection = dg.AssetSelection.key_prefixes([cohort]) & dg.AssetSelection.groups("features", "training", "evaluation")
    return dg.materialize(
        synthetic_assets(defs),
        selection=selection,
        instance=instance,
        resources=workspace.resources(),
        run_config=dg.RunConfig(
            ops={f"{cohort}__candidate_model": {"config": {"max_iter": candidate_iterations}},
                 f"{cohort}__model_evaluation": {"config": {"n_bootstrap": 50}}}
        ),
    )


@pytest.fixture
def landed(defs, workspace, small_encounters):
    """Two sequential extracts landed and validated."""
    paths = uci.write_sequential_extracts(small_encounters, workspace.landing, 2, prefix="month")
    instance = dg.DagsterInstance.ephemeral()
    results = ingest(defs, workspace, instance, [p.name for p in paths], raise_on_error=False)
    return instance, results


def test_ingestion_lands_validates_and_reconciles(landed, small_encounters):
    _, results = landed
    total_landed = total_valid = total_quarantined = 0
    for result in results:
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"no_direct_identifiers": True, "landed_rows_reconcile": True,
                          "quarantine_rate_within_limit": True}
        raw = result.asset_materializations_for_node("synthetic_diabetes130__raw_extract")[0].metadata
        valid = result.asset_materializations_for_node("synthetic_diabetes130__validated_extract")[0].metadata
        assert len(raw["sha256"].value) == 64
        total_landed += raw["rows_landed"].value
        total_valid += valid["rows_valid"].value
        total_quarantined += valid["rows_quarantined"].value
    assert total_landed == len(small_encounters) == total_valid + total_quarantined


def test_raw_data_version_is_the_file_sha256(landed, workspace):
    _, results = landed
    from clinical_mlops.ingestion.landing import file_sha256

    event = results[0].get_asset_materialization_events()[0]
    assert event.asset_key == dg.AssetKey(["synthetic_diabetes130", "raw_extract"])
    assert event.materialization.tags["dagster/data_version"] == file_sha256(workspace.landing / event.partition)


def test_identifier_gate_blocks_downstream(defs, workspace, small_encounters):
    frame = small_encounters.head(100).copy()
    frame.loc[7, "payer_code"] = "someone@example.com"
    frame.to_csv(workspace.landing / "leaky.csv", index=False)
    instance = dg.DagsterInstance.ephemeral()
    (result,) = ingest(defs, workspace, instance, ["leaky.csv"], raise_on_error=False)
    gate = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_direct_identifiers"][0]
    assert not gate.passed
    assert "payer_code" in gate.metadata["columns_flagged"].value
    assert "someone@example.com" not in str(gate.metadata) and "someone@example.com" not in (gate.description or "")
    assert not result.asset_materializations_for_node("synthetic_diabetes130__validated_extract")
    with warehouse.connect(workspace.warehouse) as con:
        assert con.execute("SELECT count(*) FROM raw.synthetic_diabetes130").fetchone()[0] == 0


def test_bad_extract_fails_the_run_with_a_clear_message(defs, workspace, small_encounters):
    small_encounters.head(10).drop(columns=["race"]).to_csv(workspace.landing / "norace.csv", index=False)
    instance = dg.DagsterInstance.ephemeral()
    (result,) = ingest(defs, workspace, instance, ["norace.csv"], raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "missing column(s): race" in message and "Nothing was landed" in message


def test_training_graph_registers_models_and_reproduces_predictions(defs, workspace, landed):
    instance, _ = landed
    first = _train(defs, workspace, instance)
    assert first.success
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in first.get_asset_check_evaluations()}
    assert checks[("synthetic_diabetes130_readmission_30d/encounter_features", "feature_schema_valid")]
    assert checks[("synthetic_diabetes130_readmission_30d/training_split", "no_patient_overlap")]
    features = first.asset_materializations_for_node("synthetic_diabetes130_readmission_30d__encounter_features")[0]
    definition = defs.resolve_asset_graph().get(features.asset_key).metadata["dagster/column_schema"]
    assert features.metadata["dagster/column_schema"].value == definition, "dagster-pandera's schema, as declared"

    candidate = first.asset_materializations_for_node("synthetic_diabetes130_readmission_30d__candidate_model")[0].metadata
    assert candidate["registered_model"].value == "synthetic_diabetes130_readmission_30d_candidate"
    assert candidate["mlflow_run"].value.startswith("http://127.0.0.1:5000/#/experiments/")
    assert len(candidate["git_commit"].value) in (40, len("unknown"))
    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    client = MlflowClient()
    version = client.get_model_version("synthetic_diabetes130_readmission_30d_candidate", candidate["model_version"].value)
    run = client.get_run(version.run_id)
    assert run.data.params["max_iter"] == "40"
    assert any(k.startswith("data_version.month_") for k in run.data.tags)
    assert run.data.tags["lock_sha256"] != "missing"
    evaluation = first.asset_materializations_for_node("synthetic_diabetes130_readmission_30d__model_evaluation")[0].metadata
    low, high = (float(x) for x in evaluation["candidate_auroc_ci"].value.split("–"))
    assert low <= evaluation["candidate_auroc"].value <= high

    second = _train(defs, workspace, instance)
    assert second.success
    with warehouse.connect(workspace.warehouse) as con:
        versions = con.execute(
            """SELECT model_version, list(score ORDER BY encounter_id) FROM ml.predictions
               WHERE model_name = 'synthetic_diabetes130_readmission_30d_candidate' GROUP BY model_version ORDER BY model_version"""
        ).fetchall()
    assert len(versions) == 2
    assert versions[0][1] == versions[1][1], "same inputs and code must give identical test predictions"
    loaded = tracking.load_model(f"models:/synthetic_diabetes130_readmission_30d_candidate/{versions[1][0]}")
    assert hasattr(loaded, "predict_proba")

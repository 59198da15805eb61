"""The benchmark's scale stages are the assets' steps: run in order on one small workspace, each
leaves in the warehouse what its asset would, and the figures they report are the steps' own."""

from __future__ import annotations

import shutil

import pytest

from clinical_mlops.bench import scale
from clinical_mlops.core import warehouse

ROWS = 3_000


@pytest.fixture(scope="module")
def staged(tmp_path_factory, mlflow_template):
    workspace = tmp_path_factory.mktemp("bench_workspace")
    (workspace / "mlflow").mkdir()
    shutil.copyfile(mlflow_template, workspace / "mlflow" / "mlflow.db")
    return workspace, {stage.name: scale.run_stage(stage.name, workspace, ROWS) for stage in scale.STAGES}


def _count(workspace, sql: str) -> int:
    with warehouse.connect(workspace / "warehouse.duckdb", read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def test_the_stages_are_the_graphs_stages_in_order():
    assert [s.name for s in scale.STAGES] == [
        "generate", "duckdb_scan", "land", "validate", "features", "split", "train", "drift_statistics", "fairness_aggregates",
        "evaluation", "batch_scoring"]
    with pytest.raises(SystemExit, match="unknown stage"):
        scale.run_stage("nope", None, 1)


def test_data_stages_land_validate_build_and_split_every_row(staged):
    workspace, results = staged
    assert results["generate"]["rows"] == ROWS and results["generate"]["extracts"] == 1
    assert results["duckdb_scan"]["rows"] == ROWS and results["duckdb_scan"]["files"] == 1  # the yardstick reads it all
    assert results["land"]["rows"] == ROWS and results["land"]["rejected"] == 0
    validated = results["validate"]
    assert validated["reconciles"] and validated["rows_valid"] + validated["rows_quarantined"] == ROWS
    assert _count(workspace, "SELECT count(*) FROM staging.synthetic_diabetes130") == validated["rows_valid"]
    built = results["features"]
    assert built["schema_failures"] == 0 and built["rows_checked"] == built["rows_out"] > 0
    split = results["split"]
    assert split["patient_overlap"] == 0 and split["train_rows"] + split["test_rows"] == built["rows_out"]
    assert all(r["rows_processed"] > 0 for r in results.values())


def test_ml_stages_register_judge_and_score_as_the_assets_do(staged):
    workspace, results = staged
    trained = results["train"]
    assert 0.5 < trained["candidate"]["test_auroc"] <= 1 and 0.5 < trained["baseline"]["test_auroc"] <= 1
    assert _count(workspace, "SELECT count(DISTINCT model_name) FROM ml.model_versions") == 2

    drift = results["drift_statistics"]
    assert drift["features_tested"] > 0 and drift["reference_rows"] > 0 and drift["current_rows"] > 0
    assert drift["prediction_drift"] is not None  # scored by the reference model, as the asset does
    assert _count(workspace, "SELECT count(*) FROM monitoring.drift_runs") == 1
    assert (workspace / "reports" / scale.COHORT / "drift").is_dir()

    fairness = results["fairness_aggregates"]
    assert sum(fairness["verdicts"].values()) > 0 and fairness["audit_id"]
    assert list((workspace / "reports" / scale.COHORT).glob("fairness_report_*.html"))

    evaluation = results["evaluation"]
    for role in ("baseline", "candidate"):
        low, high = evaluation[role]["auroc_ci"]
        assert low <= evaluation[role]["auroc"] <= high
    assert evaluation["plots"] > 0
    assert _count(workspace, "SELECT count(DISTINCT model_name) FROM ml.evaluation_metrics") == 2

    scored = results["batch_scoring"]
    # scored by a hand-approved champion; the bench makes no model card, so not traceable to one
    assert scored["rows"] > 0 and scored["model_source"] == "champion_alias" and not scored["traceable"]
    assert _count(workspace, "SELECT count(*) FROM ml.batch_predictions") == scored["rows"]

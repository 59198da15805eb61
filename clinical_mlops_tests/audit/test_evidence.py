"""MLflow holds the evidence trail: every step's evidence nested under the model version's run.

One small graph is trained (``_audit_graph.build``: two extracts, baseline, candidate,
evaluation, model card; ``record_run`` after each run, as the CLI does), then fairness, change
control and promotion (recorded by ``record_run``) and drift (left to ``audit_ledger_sensor``) run
on top. The candidate's training run must then hold one nested run per step with its metrics and
report files, linked to the Dagster run, and recording again must add nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow.tracking import MlflowClient

from clinical_mlops.audit import events as audit_events, ledger
from clinical_mlops.core import tracking
from clinical_mlops.definitions import defs as load_defs
from clinical_mlops.defs.audit import dagster_runs_in_mlflow, evidence, sensors
from clinical_mlops.defs.resources import WarehouseResource
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH
from clinical_mlops_tests.audit import _audit_graph
from clinical_mlops_tests.audit._audit_graph import COHORT

LATER_STEPS = ("fairness_report", "change_control_report", "promotion", "drift_report")


@pytest.fixture(scope="module")
def graph(tmp_path_factory, mlflow_template, small_encounters):
    graph = _audit_graph.build(tmp_path_factory.mktemp("evidence_graph"), mlflow_template, small_encounters)
    raw = yaml.safe_load(SHIPPED_POLICY_PATH.read_text())
    raw["fairness"]["min_group_size"] = 20  # the small fixture has ~600 held-out encounters
    raw["fairness"]["n_bootstrap"] = 30
    policy_path = graph.workspace.root / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    keys = {dg.AssetKey([COHORT, name]) for name in LATER_STEPS}
    assets = [a for a in load_defs().assets or [] if isinstance(a, dg.AssetsDefinition) and set(a.keys) <= keys]
    policy = {"config": {"policy_path": str(policy_path)}}
    common = dict(instance=graph.instance, resources=graph.workspace.resources())
    release = dg.materialize(
        assets, selection=dg.AssetSelection.assets(*(dg.AssetKey([COHORT, n]) for n in LATER_STEPS[:3])),
        run_config=dg.RunConfig(ops={
            f"{COHORT}__fairness_report": policy,
            f"{COHORT}__change_control_report": {"config": {"policy_path": str(policy_path), "n_bootstrap": 20}},
            f"{COHORT}__promotion": policy,
        }), raise_on_error=False, **common,
    )
    drift = dg.materialize(
        assets, selection=dg.AssetSelection.assets(dg.AssetKey([COHORT, "drift_report"])),
        partition_key=graph.extract_ids[-1], raise_on_error=False,
        run_config=dg.RunConfig(ops={f"{COHORT}__drift_report": {"config": {
            "policy_path": str(policy_path), "prediction_drift": False}}}), **common,
    )
    for run in (release, drift):
        assert run.get_asset_materialization_events(), "the later steps materialized"
    sensors.record_run(graph.instance, release.run_id, warehouse_path=graph.workspace.warehouse,
                       tracking_uri=graph.workspace.tracking_uri)
    # The drift run is left to the audit sensor, as a run launched from the UI or a schedule would be;
    # it sees every finished run of the instance and must log only what is not yet logged.
    tracking.configure(graph.workspace.tracking_uri, graph.workspace.artifacts)  # the code location's store
    sensors.audit_ledger_sensor(dg.build_sensor_context(
        instance=graph.instance, resources={"warehouse": WarehouseResource(path=str(graph.workspace.warehouse))}))
    graph.later_run_ids = [release.run_id, drift.run_id]
    return graph


@pytest.fixture
def client(graph) -> MlflowClient:
    return MlflowClient(tracking_uri=graph.workspace.tracking_uri, registry_uri=graph.workspace.tracking_uri)


def _children(client: MlflowClient, name: str, version: str) -> dict[str, list]:
    parent = client.get_run(client.get_model_version(name, version).run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_step: dict[str, list] = {}
    for run in runs:
        by_step.setdefault(run.data.tags[tracking.STEP_TAG], []).append(run)
    return by_step


def _artifacts(client: MlflowClient, run) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id)}


def test_every_step_is_a_run_nested_under_the_version_it_concerns(graph, client):
    candidate = _children(client, graph.candidate, graph.candidate_version)
    assert set(candidate) == {"validation", "evaluation", "model_card", "fairness", "change_control", "promotion",
                              "drift"}
    assert all(len(runs) == 1 for runs in candidate.values()), "one nested run per step and Dagster run"
    baseline = _children(client, graph.baseline, graph.baseline_version)
    assert set(baseline) == {"validation", "evaluation", "model_card"}
    for runs in (*candidate.values(), *baseline.values()):
        (run,) = runs
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["dagster.run_url"].endswith(f"/runs/{tags[tracking.DAGSTER_RUN_TAG]}")
        assert tags["clinical_mlops.model_version"] in (graph.candidate_version, graph.baseline_version)
        assert "evidence.json" in _artifacts(client, run)
    version = client.get_model_version(graph.candidate, graph.candidate_version)
    assert version.tags["evidence.fairness"] == candidate["fairness"][0].info.run_id, "the version links its evidence"


def test_training_and_evaluation_evidence_carry_the_counts_metrics_and_plots(graph, client):
    steps = _children(client, graph.candidate, graph.candidate_version)
    (validation,) = steps["validation"]
    assert validation.data.tags[tracking.DAGSTER_RUN_TAG] == graph.train_run_id
    metrics = validation.data.metrics
    assert metrics["extracts"] == metrics["extracts_validated"] == 2
    assert metrics["rows_landed"] == sum(metrics[f"{e}.rows_landed"] for e in graph.extract_ids) > 0
    assert metrics["rows_valid"] + metrics["rows_quarantined"] == metrics["rows_landed"]
    downloaded = client.download_artifacts(validation.info.run_id, "validation.json", str(graph.workspace.root))
    counts = json.loads(Path(downloaded).read_text())
    ledger.check_payload(counts)  # counts and hashes only: the ledger's guard accepts it
    assert [e["extract_id"] for e in counts["extracts"]] == graph.extract_ids

    (evaluation,) = steps["evaluation"]
    assert {"auroc", "auprc", "brier", "ece"} <= set(evaluation.data.metrics)
    assert 0.0 < evaluation.data.metrics["auroc"] < 1.0
    files = _artifacts(client, evaluation)
    assert "by_group.md" in files and any(f.endswith(".png") for f in files)
    assert not any(f.startswith(f"{graph.baseline}_v") for f in files), "only this version's plots"

    (card,) = steps["model_card"]
    assert {"model_card.html", "model_card.md", "tripod_report.md"} <= _artifacts(client, card)


def test_fairness_change_control_and_drift_log_their_reports_and_checks(graph, client):
    steps = _children(client, graph.candidate, graph.candidate_version)
    (fairness,) = steps["fairness"]
    assert "check.recall_gap_within_policy.passed" in fairness.data.metrics
    assert any(f.startswith("fairness_report_") and f.endswith(".html") for f in _artifacts(client, fairness))
    (change,) = steps["change_control"]
    assert "auroc_challenger" in change.data.metrics and "gate_passes" in change.data.metrics
    change_files = _artifacts(client, change)
    assert any(f.endswith(".md") and f.startswith(f"{graph.candidate}_v") for f in change_files)
    assert "report.md" not in change_files, "the Markdown metadata is the report file: logged once"
    (promotion,) = steps["promotion"]
    assert "check.promotion_criteria_met.passed" in promotion.data.metrics
    (drift,) = steps["drift"]
    assert drift.data.tags[tracking.DAGSTER_RUN_TAG] == graph.later_run_ids[1], "logged by the audit sensor"
    assert drift.data.tags[tracking.PARTITION_TAG] == graph.extract_ids[-1]
    assert "drift_share" in drift.data.metrics and "check.no_dataset_drift.passed" in drift.data.metrics
    assert f"{graph.extract_ids[-1]}.html" in _artifacts(client, drift)


def _dagster_run_in_mlflow(client: MlflowClient, run_id: str):
    experiment = client.get_experiment_by_name(dagster_runs_in_mlflow.EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{run_id}'")
    return run


def test_each_recorded_dagster_run_is_one_mlflow_run_listing_its_evidence(graph, client, tmp_path):
    experiment = client.get_experiment_by_name(dagster_runs_in_mlflow.EXPERIMENT)
    assert experiment.artifact_location == (graph.workspace.artifacts / "dagster_runs").resolve().as_uri()
    for run_id in (graph.train_run_id, *graph.later_run_ids):
        run = _dagster_run_in_mlflow(client, run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["dagster.run_url"].endswith(f"/runs/{run_id}")
        listed = json.loads(Path(client.download_artifacts(run.info.run_id, "evidence_runs.json", str(tmp_path)))
                            .read_text())["evidence_runs"]
        nested = [r for name in (graph.candidate, graph.baseline)
                  for r in client.search_runs([client.get_experiment_by_name(COHORT).experiment_id],
                                              filter_string=f"tags.`{tracking.DAGSTER_RUN_TAG}` = '{run_id}'")
                  if r.data.tags["clinical_mlops.model_name"] == name]
        assert sorted(link["run_id"] for link in listed) == sorted(r.info.run_id for r in nested) != []
        assert run.data.metrics["evidence_runs"] == len(listed)
        assert run.data.metrics["steps_succeeded"] >= 1 and run.data.metrics["steps_failed"] == 0
        tags = graph.instance.get_run_by_id(run_id).tags
        assert tags[dagster_runs_in_mlflow.RUN_ID_TAG] == run.info.run_id, "the Dagster run links back"
        assert tags[dagster_runs_in_mlflow.RUN_URL_TAG].endswith(run.info.run_id)


def test_a_failed_dagster_run_is_a_failed_mlflow_run(tmp_path, mlflow_template):
    @dg.asset
    def broken() -> None:
        raise RuntimeError("step failed")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    store = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template, store)
    uri = f"sqlite:///{store}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("a_model", artifact_location=(tmp_path / "artifacts" / "a_model").as_uri())
    evidence_run = client.create_run(experiment_id).info.run_id
    link = dagster_runs_in_mlflow.EvidenceLink("evaluation", "a_model v1", "", evidence_run)
    recorded = dagster_runs_in_mlflow.record_dagster_run(
        instance, result.run_id, [link], tracking_uri=uri, dagster_run_url="http://ui/runs/x", mlflow_ui="http://m")
    run = client.get_run(recorded)
    assert run.info.status == "FAILED" and run.data.metrics["steps_failed"] == 1
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert not tracking.active_run_leftover()
    again = dagster_runs_in_mlflow.record_dagster_run(
        instance, result.run_id, [link], tracking_uri=uri, dagster_run_url="http://ui/runs/x", mlflow_ui="http://m")
    assert again == recorded and len(client.get_metric_history(recorded, "evidence_runs")) == 1


def test_recording_a_run_again_logs_nothing_twice(graph, client):
    before = {step: len(runs) for step, runs in _children(client, graph.candidate, graph.candidate_version).items()}
    dagster_runs = {run_id: _dagster_run_in_mlflow(client, run_id).info.run_id
                    for run_id in (graph.train_run_id, *graph.later_run_ids)}
    for run_id in (graph.train_run_id, *graph.later_run_ids):
        recording = sensors.record_run(graph.instance, run_id, warehouse_path=graph.workspace.warehouse,
                                       tracking_uri=graph.workspace.tracking_uri)
        assert recording.evidence.logged == 0 and recording.evidence.already_logged > 0
        assert recording.events_appended == 0
    after = {step: len(runs) for step, runs in _children(client, graph.candidate, graph.candidate_version).items()}
    assert after == before
    for run_id, mlflow_run_id in dagster_runs.items():
        assert _dagster_run_in_mlflow(client, run_id).info.run_id == mlflow_run_id
        assert len(client.get_metric_history(mlflow_run_id, "evidence_runs")) == 1, "nothing logged twice"


def test_an_unreachable_store_or_unknown_version_is_a_warning_not_a_failure(graph, tmp_path, mlflow_template, caplog):
    missing = evidence.record_evidence(graph.instance, graph.train_run_id,
                                       tracking_uri=f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}")
    assert missing.logged == 0 and "no MLflow store" in missing.problems[0]
    shutil.copyfile(mlflow_template, tmp_path / "empty.db")  # a store without these versions
    recording = sensors.record_run(graph.instance, graph.train_run_id, warehouse_path=graph.workspace.warehouse,
                                   tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    assert recording.evidence.logged == 0 and len(recording.evidence.problems) == 6  # 3 steps x 2 versions
    assert any("evidence not logged to MLflow" in r.getMessage() for r in caplog.records)


def test_a_run_with_nothing_about_a_model_never_touches_mlflow(tmp_path):
    @dg.asset
    def toy() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": 3})

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([toy], instance=instance)
    assert evidence.run_evidence(instance, result.run_id) == []
    # not even a missing store is reported: there was nothing to log
    assert evidence.record_evidence(instance, result.run_id, tracking_uri="sqlite:////nonexistent/x.db").problems == ()


def test_every_step_names_an_asset_of_the_definitions():
    """An asset renamed without updating ``evidence.STEPS`` would silently drop its evidence."""
    names = {key.path[-1] for key in load_defs().resolve_asset_graph().get_all_asset_keys()}
    assert set(evidence.STEPS) <= names


@pytest.mark.parametrize(("asset", "key"), [("external_evaluation", "model"), ("batch_predictions", "model"),
                                            ("production_monitoring", "model_in_service")])
def test_the_later_steps_name_the_version_they_judged(asset, key):
    """External evaluation, scoring and production monitoring name their model as ``name vN``, or none."""
    step = evidence.STEPS[asset]
    (subject,) = step.subjects({key: dg.MetadataValue.text("readmission_30d_candidate v7"), "other": 1})
    assert (subject.model_name, subject.model_version) == ("readmission_30d_candidate", "7")
    assert step.subjects({key: dg.MetadataValue.text("none")}) == []


def test_a_column_schema_in_metadata_is_summarised_as_its_columns_not_iterated():
    schema = dg.TableSchema(columns=[dg.TableColumn("age", "int64"), dg.TableColumn("los", "float64")])
    plain = evidence.plain_metadata({"dagster/column_schema": dg.MetadataValue.table_schema(schema), "rows": 3})
    assert plain == {"dagster/column_schema": [{"name": "age", "type": "int64"}, {"name": "los", "type": "float64"}],
                     "rows": 3}
    summary = audit_events.summarise_metadata(plain)
    assert summary["rows"] == 3 and set(summary["dagster/column_schema"]) == {"sha256", "bytes"}

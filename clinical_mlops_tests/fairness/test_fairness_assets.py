"""Fairness assets through dg.materialize: gates, incidents, the sensor, root cause and mitigation."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from mlflow.tracking import MlflowClient

from clinical_mlops.fairness import audit as fairness
from clinical_mlops.monitoring import incidents
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.ingestion import uci
from clinical_mlops.defs.fairness.sensors import fairness_check_failed_sensor
from clinical_mlops.governance.policy import DEFAULT_POLICY_PATH, load_policy

COHORT = "readmission_30d"
GROUPS = {"ingestion", "validation", "features", "training", "evaluation", "fairness"}



@pytest.fixture
def trained(defs, workspace, small_encounters, tmp_path):
    """One extract landed, the readmission graph trained (fast settings), and a small-data policy."""
    instance = dg.DagsterInstance.ephemeral()
    (path,) = uci.write_sequential_extracts(small_encounters, workspace.landing, 1, prefix="month")
    instance.add_dynamic_partitions("extracts", [path.name])
    # only the groups this test runs, so resources other teams' assets need are not required here
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)
              and set(a.group_names_by_key.values()) <= GROUPS]
    assert dg.materialize(assets, selection=dg.AssetSelection.groups("ingestion", "validation"), partition_key=path.name,
                          instance=instance, resources=workspace.resources()).success
    selection = dg.AssetSelection.groups("features", "training", "evaluation") & dg.AssetSelection.key_prefixes([COHORT])
    assert dg.materialize(assets, selection=selection, instance=instance, resources=workspace.resources(),
                          run_config=dg.RunConfig(ops={f"{COHORT}__candidate_model": {"config": {"max_iter": 20}},
                                                       f"{COHORT}__model_evaluation": {"config": {"n_bootstrap": 10}}})
                          ).success
    raw = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    raw["fairness"]["min_group_size"] = 20  # the small fixture has ~600 held-out encounters
    raw["fairness"]["n_bootstrap"] = 30
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return instance, assets, str(policy_path)


def _run(assets, keys, instance, workspace, config):
    return dg.materialize(assets, selection=dg.AssetSelection.assets(*keys), instance=instance,
                          resources=workspace.resources(), run_config=dg.RunConfig(ops=config), raise_on_error=False)


def _inject_recall_bias(workspace):
    """Zero the candidate's held-out scores for one group: a model that never alerts for it."""
    with warehouse.connect(workspace.warehouse) as con:
        con.execute(f"""UPDATE ml.predictions SET score = 0.0
            WHERE model_name = '{COHORT}_candidate' AND encounter_id IN (
                SELECT encounter_id FROM features.{COHORT} WHERE race = 'AfricanAmerican')""")


def test_fairness_gate_incident_sensor_and_remediation(trained, workspace):
    instance, assets, policy_path = trained
    report_key = dg.AssetKey([COHORT, "fairness_report"])
    remediation = [dg.AssetKey([COHORT, "fairness_root_cause"]), dg.AssetKey([COHORT, "mitigated_model"])]
    config = {f"{COHORT}__fairness_report": {"config": {"policy_path": policy_path}}}

    # 1. the unbiased candidate passes the blocking gate; remediation has nothing to do
    first = _run(assets, [report_key], instance, workspace, config)
    assert first.success
    checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
    assert set(checks) == {r.check_name for r in load_policy().fairness.metrics}
    assert checks["recall_gap_within_policy"].passed
    meta = first.asset_materializations_for_node(f"{COHORT}__fairness_report")[0].metadata
    assert meta["policy_sha256"].value == load_policy(policy_path).sha256
    assert meta["report"].value.endswith(".html")
    quiet = _run(assets, remediation, instance, workspace, {
        f"{COHORT}__fairness_root_cause": {"config": {"policy_path": policy_path}},
        f"{COHORT}__mitigated_model": {"config": {"policy_path": policy_path}}})
    assert quiet.success
    for node in ("fairness_root_cause", "mitigated_model"):
        assert quiet.asset_materializations_for_node(f"{COHORT}__{node}")[0].metadata["status"].value == "no failing group"
    context = dg.build_sensor_context(instance=instance)
    assert isinstance(fairness_check_failed_sensor(context), dg.SkipReason)

    # 2. a biased candidate fails the blocking gate (ERROR), the run stops, an incident opens
    _inject_recall_bias(workspace)
    second = _run(assets, [report_key], instance, workspace, config)
    assert not second.success
    recall = [c for c in second.get_asset_check_evaluations() if c.check_name == "recall_gap_within_policy"][0]
    assert not recall.passed and recall.severity == dg.AssetCheckSeverity.ERROR
    failing = recall.metadata["failing_groups"].value
    assert any(g["group"] == "AfricanAmerican" and g["ci"][1] < -0.1 for g in failing)
    incident_id = recall.metadata["incident_id"].value
    with warehouse.connect(workspace.warehouse) as con:
        opened = incidents.list_incidents(con, COHORT)
        verdict_hashes = con.execute("SELECT DISTINCT policy_sha256 FROM monitoring.fairness_verdicts").fetchall()
    assert list(opened["incident_id"]) == [incident_id]
    row = opened.iloc[0]
    assert (row["severity"], row["owner"], row["status"]) == ("block_promotion", "model_owner", "open")
    assert (row["due_by"] - row["opened_at"]).total_seconds() == 24 * 3600
    assert "AfricanAmerican" in row["evidence"] and verdict_hashes == [(load_policy(policy_path).sha256,)]

    # 3. the sensor requests root cause and mitigation for that cohort, once
    result = fairness_check_failed_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests
    assert set(request.asset_selection) == set(remediation) and COHORT in request.run_key
    again = fairness_check_failed_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason)

    # 4. root cause and mitigation run, and the mitigated challenger is registered and audited
    third = _run(assets, remediation, instance, workspace, {
        f"{COHORT}__fairness_root_cause": {"config": {"policy_path": policy_path}},
        f"{COHORT}__mitigated_model": {"config": {"policy_path": policy_path, "n_bootstrap": 30, "eg_max_iter": 3,
                                                  "methods": ["group_thresholds", "exponentiated_gradient"]}}})
    assert third.success
    cause = third.asset_materializations_for_node(f"{COHORT}__fairness_root_cause")[0].metadata
    assert "AfricanAmerican" in cause["findings"].value and "Conclusion" in cause["findings"].value
    mitigated = third.asset_materializations_for_node(f"{COHORT}__mitigated_model")[0].metadata
    assert mitigated["registered_model"].value == f"{COHORT}_mitigated"
    assert "group_thresholds" in mitigated["tradeoff"].value and "exponentiated_gradient" in mitigated["tradeoff"].value
    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    version = MlflowClient().get_model_version(f"{COHORT}_mitigated", mitigated["model_version"].value)
    run = MlflowClient().get_run(version.run_id)
    assert run.data.params["mitigation"] == mitigated["mitigation"].value
    assert run.data.tags["needs_sensitive_attribute"] == str(mitigated["needs_sensitive_attribute"].value).lower()
    with warehouse.connect(workspace.warehouse) as con:
        roles = con.execute(f"SELECT role, count(*) FROM ml.model_versions WHERE cohort = '{COHORT}' GROUP BY role "
                            "ORDER BY role").fetchall()
        scored = con.execute(f"SELECT count(*) FROM ml.predictions WHERE model_name = '{COHORT}_mitigated'").fetchall()
        summary = fairness.summary_for(con, COHORT)
    assert dict(roles)["mitigated"] == 1 and scored[0][0] > 0
    assert summary["candidate"]["blocking_failed"] and summary["mitigated"] is not None
    assert summary["recall_gap"]["before"]["estimate"] < -0.1 and summary["recall_gap"]["after"] is not None
    assert summary["open_incidents"] == 1
    loaded = tracking.load_model(f"models:/{COHORT}_mitigated/{mitigated['model_version'].value}")
    assert hasattr(loaded, "predict_proba")

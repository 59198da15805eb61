"""Fairness assets through dg.materialize: gates, incidents, the sensor, root cause and mitigation."""

from __future__ import annotations

import re

import dagster as dg
import pytest
import yaml
from mlflow.tracking import MlflowClient

from clinical_mlops.core import evidence
from clinical_mlops.fairness import audit as fairness
from clinical_mlops.monitoring import incidents
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.ingestion import uci
from clinical_mlops.defs.fairness.sensors import fairness_check_failed_sensor
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH, load_policy
from clinical_mlops_tests.conftest import synthetic_assets
from clinical_mlops_tests.helpers import asset_checks

COHORT = "synthetic_diabetes130_readmission_30d"
GROUPS = {"ingestion", "validation", "features", "training", "evaluation", "fairness"}
# what each asset attaches, in order (the steps return it ready-made; the assets only map it)
REPORT_METADATA = ["model", "operating_threshold", "test_rows", "bootstrap", "policy_version", "policy_sha256",
                   "audit_id", "verdicts", "blocking_failed", "blocking_status", "required_groups", "summary",
                   "recall_gaps", "recall_gap_plot", "report", "incidents"]
CHECK_METADATA = ["evidence", "evidence_reason", "policy_version", "policy_sha256", "bound", "severity_in_policy",
                  "status", "groups_pass", "groups_fail", "groups_insufficient_evidence", "failing_groups",
                  "insufficient_required_groups", "not_assessable_groups", "required_groups"]
MITIGATED_METADATA = ["status", "registered_model", "model_version", "mlflow_run", "mitigation", "mitigation_kind",
                      "needs_sensitive_attribute", "target", "recall_gap_before", "recall_gap_before_ci",
                      "recall_gap_after", "recall_gap_after_ci", "chosen_because", "tradeoff", "verdicts_after",
                      "audit_id", "policy_sha256", "report"]



@pytest.fixture
def trained(defs, workspace, small_encounters, tmp_path):
    """One extract landed, the readmission graph trained (fast settings), and a small-data policy."""
    instance = dg.DagsterInstance.ephemeral()
    (path,) = uci.write_sequential_extracts(small_encounters, workspace.landing, 1, prefix="month")
    instance.add_dynamic_partitions("synthetic_diabetes130_extracts", [path.name])
    # only the groups this test runs, so resources other teams' assets need are not required here
    assets = [a for a in synthetic_assets(defs) if isinstance(a, dg.AssetsDefinition)
              and set(a.group_names_by_key.values()) <= GROUPS]
    assert dg.materialize(assets, selection=dg.AssetSelection.groups("ingestion", "validation"), partition_key=path.name,
                          instance=instance, resources=workspace.resources()).success
    selection = dg.AssetSelection.groups("features", "training", "evaluation") & dg.AssetSelection.key_prefixes([COHORT])
    assert dg.materialize(assets, selection=selection, instance=instance, resources=workspace.resources(),
                          run_config=dg.RunConfig(ops={f"{COHORT}__candidate_model": {"config": {"max_iter": 20}},
                                                       f"{COHORT}__model_evaluation": {"config": {"n_bootstrap": 10}}})
                          ).success
    return instance, assets, _policy_file(tmp_path, "policy.yaml")


def _policy_file(tmp_path, name: str, edit=None) -> str:
    """The shipped policy for the small fixture (~600 held-out encounters), edited by ``edit``."""
    raw = yaml.safe_load(SHIPPED_POLICY_PATH.read_text())
    raw["fairness"]["min_group_size"] = 20
    raw["fairness"]["n_bootstrap"] = 30
    if edit is not None:
        edit(raw["fairness"])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _loose(fp: dict) -> None:
    """Bounds no gap can breach and no share-required group: every assessed group passes every rule.

    The required groups listed per attribute are the source's (``sources/diabetes130.yaml``: race
    AfricanAmerican), not the policy file's: they stay required, and have enough rows here.
    """
    for spec in fp["metrics"].values():
        if "max_difference" in spec:
            spec["max_difference"] = 1.0
        else:
            spec["min_ratio"] = 0.001
    fp.pop("required_population_share", None)
    assert "sensitive_attributes" not in fp, "the shipped policy declares no attributes: they are the source's"


def _without_evidence(fp: dict) -> None:
    """No group reaches the minimum size, and one declared rule is missing from the run's policy."""
    fp["min_group_size"] = 10_000
    fp["metrics"].pop("calibration_gap")


def _run(assets, keys, instance, workspace, config):
    return dg.materialize(assets, selection=dg.AssetSelection.assets(*keys), instance=instance,
                          resources=workspace.resources(), run_config=dg.RunConfig(ops=config), raise_on_error=False)


def _inject_recall_bias(workspace):
    """Zero the candidate's held-out scores for one group: a model that never alerts for it."""
    with warehouse.connect(workspace.warehouse) as con:
        con.execute(f"""UPDATE ml.predictions SET score = 0.0
            WHERE model_name = '{COHORT}_candidate' AND encounter_id IN (
                SELECT encounter_id FROM features.{COHORT} WHERE race = 'AfricanAmerican')""")


def test_fairness_gate_incident_sensor_and_remediation(trained, workspace, tmp_path):
    instance, assets, _ = trained
    report_key = dg.AssetKey([COHORT, "fairness_report"])
    remediation = [dg.AssetKey([COHORT, "fairness_root_cause"]), dg.AssetKey([COHORT, "mitigated_model"])]
    loose = _policy_file(tmp_path, "loose.yaml", _loose)
    policy_path = _policy_file(tmp_path, "small.yaml")

    def config(path: str) -> dict:
        return {f"{COHORT}__fairness_report": {"config": {"policy_path": path}}}

    # the checks are Dagster-non-blocking (the promotion asset enforces the gate), ERROR for blocking rules
    (report_asset,) = [a for a in assets if report_key in a.keys]
    specs = {s.name: s for s in report_asset.check_specs}
    assert specs and not any(s.blocking for s in specs.values())
    assert "promotion asset enforces the gate" in specs["recall_gap_within_policy"].description

    # 1. evidence of compliance: every assessed group inside the (loose) bounds passes; nothing to remediate
    first = _run(assets, [report_key], instance, workspace, config(loose))
    assert first.success
    checks = asset_checks(first)
    assert set(checks) == {r.check_name for r in load_policy().fairness.metrics}
    recall = checks["recall_gap_within_policy"]
    assert recall.passed and recall.metadata["evidence"].value == evidence.PASS
    assert recall.metadata["status"].value == evidence.PASS and recall.metadata["groups_pass"].value > 0
    assert recall.metadata["insufficient_required_groups"].value == []
    meta = first.asset_materializations_for_node(f"{COHORT}__fairness_report")[0].metadata
    assert meta["policy_sha256"].value == load_policy(loose).sha256
    assert meta["report"].value.endswith(".html") and meta["blocking_status"].value == evidence.PASS
    assert list(meta) == REPORT_METADATA and list(recall.metadata) == CHECK_METADATA
    assert meta["recall_gap_plot"].value.startswith("![recall gap](data:image/png;base64,")
    quiet = _run(assets, remediation, instance, workspace, {
        f"{COHORT}__fairness_root_cause": {"config": {"policy_path": loose}},
        f"{COHORT}__mitigated_model": {"config": {"policy_path": loose}}})
    assert quiet.success
    for node in ("fairness_root_cause", "mitigated_model"):
        assert quiet.asset_materializations_for_node(f"{COHORT}__{node}")[0].metadata["status"].value == "no failing group"
    context = dg.build_sensor_context(instance=instance)
    assert isinstance(fairness_check_failed_sensor(context), dg.SkipReason)

    # 2. a biased candidate fails the blocking gate (ERROR), an incident opens; the run itself completes
    #    (non-blocking checks), so root cause and mitigation can follow
    _inject_recall_bias(workspace)
    second = _run(assets, [report_key], instance, workspace, config(policy_path))
    assert second.success
    recall = asset_checks(second)["recall_gap_within_policy"]
    assert not recall.passed and recall.severity == dg.AssetCheckSeverity.ERROR
    assert recall.metadata["evidence"].value == evidence.FAIL and recall.metadata["status"].value == evidence.FAIL
    failing = recall.metadata["failing_groups"].value
    assert any(g["group"] == "AfricanAmerican" and g["ci"][1] < -0.1 for g in failing)
    assert "AfricanAmerican" in recall.description and not recall.description.startswith("insufficient")
    incident_id = recall.metadata["incident_id"].value
    assert list(recall.metadata) == [*CHECK_METADATA, "incident_id", "incident_owner"]
    with warehouse.connect(workspace.warehouse) as con:
        opened = incidents.list_incidents(con, COHORT)
        verdict_hashes = con.execute("SELECT DISTINCT policy_sha256 FROM monitoring.fairness_verdicts "
                                     "WHERE audit_id = ?", [second.asset_materializations_for_node(
                                         f"{COHORT}__fairness_report")[0].metadata["audit_id"].value]).fetchall()
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
    assert list(cause) == ["status", "model", "policy_sha256", "findings", "conclusions", "report"]
    mitigated = third.asset_materializations_for_node(f"{COHORT}__mitigated_model")[0].metadata
    assert mitigated["registered_model"].value == f"{COHORT}_mitigated" and list(mitigated) == MITIGATED_METADATA
    assert mitigated["target"].value == "race=AfricanAmerican (recall_gap)"
    assert re.fullmatch(r"[+-]\d\.\d{4} to [+-]\d\.\d{4}", mitigated["recall_gap_after_ci"].value)
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
    assert summary["candidate"]["blocking_status"] == evidence.FAIL
    recall_rule = next(r for r in summary["candidate"]["rules"] if r["rule"] == "recall_gap")
    assert recall_rule["status"] == evidence.FAIL and recall_rule["blocking"]
    assert any(g["group"] == "AfricanAmerican" and g["ci"][1] < -0.1 for g in recall_rule["failing"])
    assert {r["rule"] for r in summary["mitigated"]["rules"]} == {r.name for r in load_policy().fairness.metrics}
    assert summary["recall_gap"]["before"]["estimate"] < -0.1 and summary["recall_gap"]["after"] is not None
    assert summary["open_incidents"] == 1
    loaded = tracking.load_model(f"models:/{COHORT}_mitigated/{mitigated['model_version'].value}")
    assert hasattr(loaded, "predict_proba")
    # the mitigated challenger gets its model card too (it may be approved as champion: its predictions
    # must trace to a card like any champion's)
    from clinical_mlops.audit import ledger, steps as audit_steps
    from clinical_mlops.features.cohort import load_cohort

    with warehouse.connect(workspace.warehouse) as con:
        cards = audit_steps.write_model_cards(
            con, load_cohort(COHORT), ledger_path=ledger.default_ledger_path(workspace.warehouse),
            reports_dir=workspace.root / "reports", tracking_uri=workspace.tracking_uri,
            artifact_root=workspace.artifacts)
    carded = {c.role: c.card for c in cards.cards}
    assert set(carded) == {"candidate", "baseline", "mitigated"}
    tagged = MlflowClient().get_model_version(f"{COHORT}_mitigated", mitigated["model_version"].value).tags
    assert tagged["model_card_sha256"] == carded["mitigated"].sha256

    # 5. no evidence: no group reaches the minimum size, and the run's policy lacks a declared rule.
    #    Neither is a pass; the description names the required groups with their minimum detectable gap.
    bare = _policy_file(tmp_path, "bare.yaml", _without_evidence)
    fourth = _run(assets, [report_key], instance, workspace, config(bare))
    assert fourth.success
    checks = asset_checks(fourth)
    recall = checks["recall_gap_within_policy"]
    assert not recall.passed and recall.severity == dg.AssetCheckSeverity.ERROR
    assert recall.metadata["evidence"].value == evidence.INSUFFICIENT
    assert recall.metadata["status"].value == evidence.INSUFFICIENT
    assert recall.description.startswith("insufficient evidence: required group(s) without sufficient evidence: ")
    assert "race=AfricanAmerican (n=" in recall.description and "min detectable gap" in recall.description
    required = {(g["slice"], g["group"]): g for g in recall.metadata["insufficient_required_groups"].value}
    assert ("race", "AfricanAmerican") in required  # the shipped policy's required group
    assert "min_group_size" in required[("race", "AfricanAmerican")]["reason"]
    assert "not_assessable_groups" in recall.metadata
    missing = checks["calibration_gap_within_policy"]
    assert not missing.passed and missing.metadata["evidence"].value == evidence.INSUFFICIENT
    assert "not in the policy used for this run" in missing.description
    assert list(missing.metadata) == ["evidence", "evidence_reason", "policy_version", "policy_sha256",
                                      "severity_in_policy"]
    assert missing.severity == dg.AssetCheckSeverity.WARN
    with warehouse.connect(workspace.warehouse) as con:
        candidate = con.execute(f"SELECT model_name, model_version FROM ml.model_versions WHERE cohort = '{COHORT}' "
                                "AND role = 'candidate' ORDER BY registered_at DESC LIMIT 1").fetchone()
        gate = fairness.rule_statuses(con, *candidate)
        assert len(incidents.list_incidents(con, COHORT)) == 1, "insufficient evidence blocks; it opens no incident"
    assert gate is not None and gate.policy_sha256 == load_policy(bare).sha256
    status = gate.rule("recall_gap")
    assert status.status == evidence.INSUFFICIENT and status.blocking and gate.rule("calibration_gap") is None
    aa = next(f for f in status.insufficient_required if (f.slice, f.group) == ("race", "AfricanAmerican"))
    assert aa.required and aa.n_positive is not None and aa.n_positive > 0

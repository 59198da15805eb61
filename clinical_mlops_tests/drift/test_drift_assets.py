"""Drift, change-control and promotion assets through dg.materialize on a temporary warehouse."""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import partial
from pathlib import Path

import dagster as dg

from clinical_mlops.registry import aliases as registry
from clinical_mlops.ingestion import synthetic, uci
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH
from clinical_mlops_tests.helpers import ingest, materialize

COHORT = "synthetic_diabetes130_readmission_30d"
MODEL = f"{COHORT}_candidate"



GROUPS = {"ingestion", "validation", "features", "training", "evaluation", "fairness", "drift", "registry"}
_ingest = partial(ingest, groups=GROUPS)
_materialize = partial(materialize, groups=GROUPS)


def _policy(tmp_path, *, drift_severity: str = "warn") -> str:
    """The shipped policy with absolute criteria a 3,000-row synthetic model can meet."""
    text = SHIPPED_POLICY_PATH.read_text()
    text = text.replace("min_auroc: 0.60", "min_auroc: 0.50").replace("max_brier: 0.15", "max_brier: 0.25")
    text = text.replace("severity: warn                   # warn | block_promotion", f"severity: {drift_severity}")
    path = tmp_path / f"policy_{drift_severity}.yaml"
    path.write_text(text)
    return str(path)


def _train_and_gate(defs, workspace, instance, policy_path, *, waive_missing_evidence=False):
    """Features → split → candidate → fairness → change control → promotion (baseline and evaluation are not
    inputs). With ``waive_missing_evidence`` a named approver waives every criterion that lacks evidence
    (a 3,000-row model cannot show a recall gap inside the bound) and the gate decides again."""
    train = {"ops": {f"{COHORT}__candidate_model": {"config": {"max_iter": 30}}}}
    gate = {"ops": {
        f"{COHORT}__fairness_report": {"config": {"policy_path": policy_path, "n_bootstrap": 60}},
        f"{COHORT}__change_control_report": {"config": {"policy_path": policy_path, "n_bootstrap": 60}},
        f"{COHORT}__promotion": {"config": {"policy_path": policy_path}},
    }}
    trained = _materialize(defs, workspace, instance, ["encounter_features", "training_split", "candidate_model"], train)
    assert trained.success
    keys = ["fairness_report", "change_control_report", "promotion"]
    result = _materialize(defs, workspace, instance, keys, gate)
    if waive_missing_evidence and _gate(result).metadata["status"].value == "pending_approval":
        _waive_insufficient(workspace, policy_path)
        again = {"ops": {k: v for k, v in gate["ops"].items() if not k.endswith("fairness_report")}}
        result = _materialize(defs, workspace, instance, keys[1:], again)
    # a blocked promotion records its decision and a failed ERROR check; the run itself succeeds
    assert result.success, [e.message for e in result.get_step_failure_events()]
    assert _gate(result).severity == dg.AssetCheckSeverity.ERROR
    return result


def _waive_insufficient(workspace, policy_path):
    """A named approver's waiver for each criterion of the latest decision whose evidence is insufficient."""
    from clinical_mlops.governance import waivers
    from clinical_mlops.governance.policy import load_policy

    policy = load_policy(policy_path)
    with contextlib.closing(warehouse.connect(workspace.warehouse)) as con:
        name, version, criteria = con.execute(
            "SELECT model_name, challenger_version, criteria_json FROM audit.promotion_decisions "
            "WHERE cohort = ? ORDER BY decided_at DESC LIMIT 1", [COHORT]).fetchone()
        for criterion in json.loads(criteria):
            if criterion["status"] == "insufficient_evidence":
                waivers.record_waiver(con, cohort=COHORT, model_name=name, model_version=version,
                                      criterion=criterion["name"], missing_evidence=[criterion["reason"]],
                                      approved_by="Dr Test Approver", reason="test: small synthetic sample",
                                      policy_sha256=policy.sha256)


def _gate(result):
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "promotion_criteria_met"]
    return check


def test_drift_report_and_promotion_gate(defs, workspace, small_encounters, tmp_path):
    policy_path = _policy(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    paths = uci.write_sequential_extracts(small_encounters, workspace.landing, 2, prefix="month")
    _ingest(defs, workspace, instance, [p.name for p in paths])

    # 1. first candidate, no champion yet: absolute criteria; what lacks evidence is waived by a named
    #    approver, then the gate promotes
    first = _train_and_gate(defs, workspace, instance, policy_path, waive_missing_evidence=True)
    assert _gate(first).passed
    meta = first.asset_materializations_for_node(f"{COHORT}__promotion")[0].metadata
    assert (meta["mode"].value, meta["promoted"].value, meta["champion_after"].value) == ("absolute", True, "v1")
    report_meta = first.asset_materializations_for_node(f"{COHORT}__change_control_report")[0].metadata
    assert report_meta["challenger"].value == f"{MODEL} v1" and "PROMOTION ALLOWED" in report_meta["report"].value
    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    assert registry.mlflow_aliases(MODEL) == {"champion": "1", "challenger": "1"}

    # 2. a shifted extract arrives: drift against the champion's training population
    shifted = synthetic.generate_encounters(synthetic.SyntheticConfig(
        n_encounters=1500, seed=99, shift=synthetic.PopulationShift(strength=1.0), first_encounter_id=90_000_000))
    shifted.to_csv(workspace.landing / "month_shifted.csv", index=False, lineterminator="\n")
    _ingest(defs, workspace, instance, ["month_shifted.csv"])
    assert _materialize(defs, workspace, instance, ["encounter_features"]).success
    drift_config = {"ops": {f"{COHORT}__drift_report": {"config": {"policy_path": policy_path}}}}
    detected = _materialize(defs, workspace, instance, ["drift_report"], drift_config, "month_shifted.csv")
    assert detected.success
    checks = {c.check_name: c for c in detected.get_asset_check_evaluations()}
    assert not checks["no_dataset_drift"].passed
    assert checks["no_dataset_drift"].severity == dg.AssetCheckSeverity.WARN
    drift_meta = detected.asset_materializations_for_node(f"{COHORT}__drift_report")[0].metadata
    assert drift_meta["reference"].value == f"champion {MODEL} v1"
    assert drift_meta["reference_extracts"].value == ["month_000.csv", "month_001.csv"]
    assert not drift_meta["current_in_reference"].value
    assert "age_years_mid" in drift_meta["drifted_features"].value and "race" in drift_meta["drifted_features"].value
    assert "alerts per 100" in drift_meta["prediction_drift"].value, "prediction drift assessed with the champion"
    assert drift_meta["target_drift"].value.startswith("prevalence")
    html = Path(drift_meta["evidently_report"].value)
    assert html.name == "month_shifted.csv.html"
    assert hashlib.sha256(html.read_bytes()).hexdigest() == drift_meta["evidently_report_sha256"].value
    assert drift_meta["evidently_sample"].value.endswith("(seed 17)")
    page = html.read_text()
    assert "patient_key" not in page and "encounter_id" not in page
    text = str({k: v.value for k, v in drift_meta.items()})
    assert "patient_key" not in text and str(shifted["encounter_id"].iloc[0]) not in text

    # the same extract under a policy whose drift severity blocks: the check fails with ERROR
    strict_policy = _policy(tmp_path, drift_severity="block_promotion")
    blocking = {"ops": {f"{COHORT}__drift_report": {"config": {
        "policy_path": strict_policy, "prediction_drift": False, "html_report": False}}}}
    strict = _materialize(defs, workspace, instance, ["drift_report"], blocking, "month_shifted.csv")
    (check,) = [c for c in strict.get_asset_check_evaluations() if c.check_name == "no_dataset_drift"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert not strict.success, "a blocking ERROR check stops the step (and everything downstream)"

    # 3. retrained challenger vs champion on the same held-out rows; the gate decides and records it
    second = _train_and_gate(defs, workspace, instance, policy_path)
    gate = _gate(second)
    meta = second.asset_materializations_for_node(f"{COHORT}__promotion")[0].metadata
    assert meta["mode"].value == "champion_comparison"
    assert meta["promoted"].value is gate.passed
    assert meta["champion_after"].value == ("v2" if gate.passed else "v1")
    assert registry.mlflow_aliases(MODEL) == {"champion": "2" if gate.passed else "1", "challenger": "2"}
    criteria = gate.metadata["criteria"].value
    assert {c["name"] for c in criteria} == {"no_significant_auroc_regression", "inside_change_envelope",
                                             "fairness_assessed", "fairness:recall_gap", "not_assessable_groups"}
    assert next(c for c in criteria if c["name"] == "inside_change_envelope")["passed"]
    report = second.asset_materializations_for_node(f"{COHORT}__change_control_report")[0].metadata
    assert report["modification_kinds"].value == "retrain_on_new_data"
    assert "month_shifted.csv" in report["report"].value, "drift context in the report"

    with warehouse.connect(workspace.warehouse) as con:
        decisions = con.execute(
            "SELECT mode, passed, promoted, policy_sha256, modification_kinds_json, status, waiver_ids_json "
            "FROM audit.promotion_decisions ORDER BY decided_at").fetchall()
        history = registry.history(con, MODEL, registry.CHAMPION)
        drift_rows = con.execute("SELECT count(*), count(DISTINCT drift_run_id) FROM monitoring.drift_metrics").fetchall()
    # the first candidate waited for approval, was promoted on the named approver's waivers, then compared
    assert [d[:3] for d in decisions] == [("absolute", False, False), ("absolute", True, True),
                                          ("champion_comparison", gate.passed, gate.passed)]
    assert [d[5] for d in decisions[:2]] == ["pending_approval", "promoted"]
    assert json.loads(decisions[0][6]) == [] and len(json.loads(decisions[1][6])) >= 1
    assert len({d[3] for d in decisions}) == 1 and len(decisions[0][3]) == 64
    assert json.loads(decisions[2][4]) == ["retrain_on_new_data"]
    assert [h.actor.startswith("dagster:") for h in history] == [True] * len(history)
    assert drift_rows[0][1] == 2 and drift_rows[0][0] > 30

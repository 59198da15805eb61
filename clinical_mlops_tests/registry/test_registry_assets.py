"""The promotion gate at the Dagster level: graph order, fail-closed fairness, pending approval, a waiver."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from clinical_mlops.core import warehouse
from clinical_mlops.definitions import defs as load_defs
from clinical_mlops.governance import waivers
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH, load_policy
from clinical_mlops_tests.audit import _audit_graph
from clinical_mlops_tests.audit._audit_graph import COHORT

STEPS = ("fairness_report", "change_control_report", "promotion")


def test_change_control_and_promotion_follow_the_governance_order_in_the_graph(defs):
    graph = defs.resolve_asset_graph()
    report = dg.AssetKey([COHORT, "change_control_report"])
    assert graph.get(report).parent_keys == {dg.AssetKey([COHORT, n]) for n in (
        "model_evaluation", "fairness_report", "mitigated_model", "model_card", "drift_report")}
    assert graph.get(dg.AssetKey([COHORT, "promotion"])).parent_keys == {report}


@pytest.fixture(scope="module")
def gated(tmp_path_factory, mlflow_template, small_encounters):
    built = _audit_graph.build(tmp_path_factory.mktemp("gate_graph"), mlflow_template, small_encounters)
    raw = yaml.safe_load(SHIPPED_POLICY_PATH.read_text())
    raw["fairness"]["min_group_size"] = 100_000  # no group of ~600 held-out encounters can be assessed
    raw["fairness"]["n_bootstrap"] = 30
    path = built.workspace.root / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    built.policy_path = path
    return built


def _run(graph, names):
    keys = {dg.AssetKey([COHORT, n]) for n in STEPS}
    assets = [a for a in load_defs().assets or [] if isinstance(a, dg.AssetsDefinition) and set(a.keys) <= keys]
    config = {"config": {"policy_path": str(graph.policy_path)}}
    ops = {f"{COHORT}__{n}": config for n in names}
    if "change_control_report" in names:
        ops[f"{COHORT}__change_control_report"] = {"config": {"policy_path": str(graph.policy_path), "n_bootstrap": 20}}
    result = dg.materialize(assets, selection=dg.AssetSelection.assets(*(dg.AssetKey([COHORT, n]) for n in names)),
                            instance=graph.instance, resources=graph.workspace.resources(),
                            run_config=dg.RunConfig(ops=ops), raise_on_error=False)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "promotion_criteria_met"]
    meta = result.asset_materializations_for_node(f"{COHORT}__promotion")[0].metadata
    return check, {k: v.value for k, v in meta.items()}


def test_the_gate_never_passes_without_fairness_evidence_and_a_waiver_unblocks_it(gated):
    # 1. fairness never assessed (materialized out of order, as from the UI): blocked, never promoted
    check, meta = _run(gated, ["change_control_report", "promotion"])
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["evidence"].value == "insufficient_evidence"
    assert (meta["status"], meta["promoted"], meta["champion_after"]) == ("blocked", False, "none")
    assert "fairness was never assessed" in meta["decision"]

    # 2. fairness assessed, but no group could be: insufficient evidence → pending approval, not promoted
    check, meta = _run(gated, list(STEPS))
    assert not check.passed and check.metadata["evidence"].value == "insufficient_evidence"
    assert check.metadata["status"].value == "pending_approval"
    assert meta["status"] == "pending_approval" and meta["promoted"] is False
    assert meta["criteria"]["fairness:recall_gap"].startswith("insufficient_evidence")
    assert "clinical-mlops waive" in meta["next_command"] and "--criterion fairness:recall_gap" in meta["next_command"]

    # 3. a named approver waives what lacks evidence; the gate promotes and records the waivers
    policy = load_policy(gated.policy_path)
    with warehouse.connect(gated.workspace.warehouse) as con:
        open_criteria = [name for name, text in meta["criteria"].items() if text.startswith("insufficient_evidence")]
        recorded = [waivers.record_waiver(con, cohort=COHORT, model_name=gated.candidate,
                                          model_version=gated.candidate_version, criterion=name,
                                          missing_evidence=[meta["criteria"][name]], approved_by="Dr Lee (CMIO)",
                                          reason="reviewed with the board", policy_sha256=policy.sha256)
                    for name in open_criteria]
    check, meta = _run(gated, ["promotion"])
    assert check.passed and check.metadata["evidence"].value == "pass"
    assert (meta["status"], meta["promoted"], meta["champion_after"]) == ("promoted", True, f"v{gated.candidate_version}")
    assert set(meta["waiver_ids"].split(", ")) == {w.waiver_id for w in recorded}
    with warehouse.connect(gated.workspace.warehouse) as con:
        rows = con.execute("SELECT status, promoted, waiver_ids_json FROM audit.promotion_decisions "
                           "ORDER BY decided_at").fetchall()
    assert [r[:2] for r in rows] == [("blocked", False), ("pending_approval", False), ("promoted", True)]
    assert set(yaml.safe_load(rows[-1][2])) == {w.waiver_id for w in recorded}

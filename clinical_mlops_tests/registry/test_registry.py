"""Registry with history: champion/challenger aliases, the append-only alias log, the CLI."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.registry import aliases as registry
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.cli.registry import register
from clinical_mlops.governance.policy import load_policy
from clinical_mlops_tests.helpers import run_cli

_cli = partial(run_cli, register)

MODEL = "cohort_x_candidate"
POLICY = "f" * 64


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def versions(workspace):
    """Three registered versions of one model (no training needed for alias bookkeeping)."""
    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    client = MlflowClient()
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source=str(workspace.artifacts / "model"))
    return ["1", "2", "3"]



def _promote(con, version, who="dr.lee"):
    return registry.promote(con, MODEL, version, actor=who, reason=f"promote v{version}", policy_sha256=POLICY)


def test_champion_at_time_t_across_promotions_and_rollbacks(con, versions):
    before = _now()
    _promote(con, "1")
    t1 = _now()
    _promote(con, "2")
    _promote(con, "3")
    t2 = _now()
    back_to_2 = registry.rollback(con, MODEL, actor="dr.kim", reason="v3 alert rate too high", policy_sha256=POLICY)
    t3 = _now()
    back_to_1 = registry.rollback(con, MODEL, actor="dr.kim", reason="v2 too", policy_sha256=POLICY)
    t4 = _now()

    assert registry.champion_at(con, MODEL, before) is None
    assert [registry.champion_at(con, MODEL, t) for t in (t1, t2, t3, t4)] == ["1", "3", "2", "1"]
    assert (back_to_2.version, back_to_2.previous_version, back_to_2.action) == ("2", "3", "rollback")
    assert (back_to_1.version, back_to_1.previous_version) == ("1", "2")
    assert registry.mlflow_aliases(MODEL) == {"champion": "1"}
    assert registry.champion_lineage(con, MODEL) == ["1"]
    with pytest.raises(registry.RegistryError, match="no earlier champion"):
        registry.rollback(con, MODEL, actor="dr.kim", reason="again", policy_sha256=POLICY)
    assert registry.inconsistencies(con, MODEL) == []


def test_each_change_records_who_why_when_and_the_policy(con, versions):
    first = _promote(con, "1", who="dr.lee")
    second = registry.set_alias(con, MODEL, registry.CHALLENGER, "2", actor="dagster:run-1",
                                reason="latest registered candidate", policy_sha256=POLICY)
    rows = registry.history(con, MODEL)
    assert [(r.alias, r.version, r.previous_version, r.action, r.actor) for r in rows] == [
        ("champion", "1", None, "promote", "dr.lee"),
        ("challenger", "2", None, "set", "dagster:run-1"),
    ]
    assert rows[0].policy_sha256 == POLICY and "approved version 1 as champion" in rows[0].meaning
    assert rows[0].reason == "promote v1" and rows[0].seq < rows[1].seq
    assert abs(first.changed_at - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=5), "stored as UTC"
    assert second.changed_at >= first.changed_at
    assert _promote(con, "1") is None, "re-promoting the champion records nothing"
    assert len(registry.history(con, MODEL)) == 2
    assert registry.mlflow_aliases(MODEL) == {"champion": "1", "challenger": "2"}


def test_unknown_version_or_missing_reason_records_nothing(con, versions):
    with pytest.raises(registry.RegistryError, match="no version 9"):
        _promote(con, "9")
    with pytest.raises(registry.RegistryError, match="actor and a reason"):
        registry.promote(con, MODEL, "1", actor="dr.lee", reason="  ", policy_sha256=POLICY)
    assert registry.history(con, MODEL) == []
    assert registry.mlflow_aliases(MODEL) == {}


def test_timezone_aware_times_are_compared_in_utc(con, versions):
    _promote(con, "1")
    change = _promote(con, "2")
    just_before_in_paris = (change.changed_at.replace(tzinfo=UTC) - timedelta(microseconds=1)).astimezone(
        timezone(timedelta(hours=1)))
    assert registry.champion_at(con, MODEL, just_before_in_paris) == "1"
    assert registry.champion_at(con, MODEL, change.changed_at) == "2"


def test_a_move_made_outside_the_registry_module_is_reported(con, versions):
    _promote(con, "1")
    MlflowClient().set_registered_model_alias(MODEL, "champion", "3")
    problems = registry.inconsistencies(con, MODEL)
    assert problems == [f"{MODEL}@champion: MLflow has 3, the alias history has 1"]


def _gate_report(con, version: str, champion: str | None, *, recall_gap: str = "pass") -> None:
    """A stored change-control report of MODEL ``version`` (against ``champion``) and its fairness audit."""
    from clinical_mlops.registry import change_control as cc
    from clinical_mlops_tests.registry.test_change_control import _model, _report
    from clinical_mlops_tests.registry.test_fairness_evidence import _audit

    challenger = _model(version, name=MODEL)
    champion_model = None if champion is None else _model(champion, name=MODEL)
    _audit(con, challenger, {"AfricanAmerican": recall_gap}, audit_id=f"audit-{version}-{recall_gap}")
    fairness = cc.compare_fairness(con, POLICY_IN_FORCE, "cohort_x", champion_model, challenger, None)
    report = dataclasses.replace(_report(champion_model, challenger, fairness=fairness), cohort="cohort_x",
                                 model_name=MODEL)
    cc.store_report(con, report, cc.decide(report, POLICY_IN_FORCE), "report")


POLICY_IN_FORCE = load_policy()


def _cli_env(workspace, monkeypatch):
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(workspace.root))
    monkeypatch.setenv("CLINICAL_MLOPS_WAREHOUSE", str(workspace.warehouse))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.tracking_uri)


def test_cli_promote_rollback_champion_and_history(workspace, versions, monkeypatch, capsys):
    _cli_env(workspace, monkeypatch)
    with warehouse.connect(workspace.warehouse) as con:
        _gate_report(con, "1", None)

    assert _cli(["promote", "--model", MODEL, "--version", "1", "--approver", "Dr Lee (CMIO)",
                 "--reason", "initial release after review"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert (promoted["version"], promoted["actor"], promoted["action"]) == ("1", "Dr Lee (CMIO)", "promote")
    between = _now().isoformat()
    with warehouse.connect(workspace.warehouse) as con:
        _gate_report(con, "2", "1")
    assert _cli(["promote", "--model", MODEL, "--version", "2", "--approver", "Dr Lee (CMIO)",
                 "--reason", "quarterly retrain"]) == 0
    capsys.readouterr()
    assert _cli(["rollback", "--model", MODEL, "--approver", "Dr Kim", "--reason", "alert fatigue"]) == 0
    rolled = json.loads(capsys.readouterr().out)
    assert (rolled["version"], rolled["previous_version"], rolled["action"]) == ("1", "2", "rollback")

    assert _cli(["champion", "--model", MODEL]) == 0
    now = json.loads(capsys.readouterr().out)
    assert now["champion"] == now["mlflow_alias"] == "1" and now["inconsistencies"] == []
    assert _cli(["champion", "--model", MODEL, "--at", between]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] == "1"
    assert _cli(["champion", "--model", MODEL, "--at", "2001-01-01T00:00:00Z"]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] is None
    assert _cli(["champion", "--model", MODEL, "--at", "yesterday"]) == 1
    capsys.readouterr()

    assert _cli(["alias-history", "--model", MODEL, "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(h["action"], h["version"], h["actor"]) for h in history] == [
        ("promote", "1", "Dr Lee (CMIO)"), ("promote", "2", "Dr Lee (CMIO)"), ("rollback", "1", "Dr Kim")]
    assert all(h["changed_at"].endswith("Z") for h in history)
    assert _cli(["alias-history", "--model", MODEL]) == 0
    assert "alert fatigue" in capsys.readouterr().out

    with warehouse.connect(workspace.warehouse) as con:
        manual = con.execute(
            "SELECT mode, promoted, actor, reason, policy_sha256, status FROM audit.promotion_decisions "
            "ORDER BY decided_at").fetchall()
    assert [m[:4] for m in manual] == [("manual", True, "Dr Lee (CMIO)", "initial release after review"),
                                       ("manual", True, "Dr Lee (CMIO)", "quarterly retrain")]
    assert all(len(m[4]) == 64 and m[5] == "promoted" for m in manual)

    assert _cli(["rollback", "--model", MODEL]) == 1
    assert "no earlier champion" in capsys.readouterr().err


def test_cli_promote_without_a_change_control_report_is_refused(workspace, versions, monkeypatch, capsys):
    _cli_env(workspace, monkeypatch)
    warehouse.connect(workspace.warehouse).close()
    assert _cli(["promote", "--model", MODEL, "--version", "1", "--approver", "Dr Lee", "--reason", "r"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: no change-control report for {MODEL} v1: run the release first (clinical-mlops release)"
    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    assert registry.mlflow_aliases(MODEL) == {}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Dagster" not in lines[0], err
    return lines[0]


def test_cli_waive_refuses_a_failure_and_a_pass_and_records_missing_evidence(workspace, versions, monkeypatch,
                                                                             capsys):
    _cli_env(workspace, monkeypatch)
    with warehouse.connect(workspace.warehouse) as con:
        _gate_report(con, "1", None, recall_gap="fail")
    waive = ["waive", "--cohort", "cohort_x", "--model", MODEL, "--approver", "Dr Lee (CMIO)", "--reason", "why"]
    assert _cli([*waive, "--version", "1", "--criterion", "fairness:recall_gap"]) == 1
    assert "never a failure" in _one_line(capsys.readouterr().err)
    assert _cli([*waive, "--version", "1", "--criterion", "min_auroc"]) == 1
    assert "not insufficient evidence" in _one_line(capsys.readouterr().err)
    assert _cli(["promote", "--model", MODEL, "--version", "1", "--approver", "Dr Lee", "--reason", "override"]) == 1
    assert _one_line(capsys.readouterr().err).startswith(f"error: refused: {MODEL} v1 fails fairness:recall_gap")

    with warehouse.connect(workspace.warehouse) as con:
        _gate_report(con, "2", None, recall_gap="insufficient_evidence")
    assert _cli([*waive, "--version", "2", "--criterion", "fairness:recall_gap", "--expires", "2001-01-01"]) == 1
    assert "not in the future" in _one_line(capsys.readouterr().err)
    assert _cli([*waive, "--version", "2", "--criterion", "fairness:recall_gap", "--expires", "2999-12-31"]) == 0
    out = capsys.readouterr()
    waiver = json.loads(out.out)
    assert waiver["approved_by"] == "Dr Lee (CMIO)" and waiver["criterion"] == "fairness:recall_gap"
    assert waiver["decision_now"] == "promoted" and waiver["next"].startswith("clinical-mlops release")
    assert waiver["expires_at"].startswith("3000-01-01"), "holds through the given day"
    with warehouse.connect(workspace.warehouse) as con:
        rows = con.execute("SELECT model_version, criterion, approved_by FROM audit.waivers").fetchall()
    assert rows == [("2", "fairness:recall_gap", "Dr Lee (CMIO)")], "the refused waivers left nothing"


def test_cli_promote_records_waivers_given_in_the_same_command(workspace, versions, monkeypatch, capsys):
    _cli_env(workspace, monkeypatch)
    with warehouse.connect(workspace.warehouse) as con:
        _gate_report(con, "1", None, recall_gap="insufficient_evidence")
    promote = ["promote", "--model", MODEL, "--version", "1", "--approver", "Dr Lee (CMIO)", "--reason", "reviewed"]
    assert _cli(promote) == 1
    assert "add --waive fairness:recall_gap" in _one_line(capsys.readouterr().err)
    assert _cli([*promote, "--waive", "fairness:recall_gap"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert promoted["changed"] and len(promoted["waiver_ids"]) == 1
    with warehouse.connect(workspace.warehouse) as con:
        (waiver_id,) = [r[0] for r in con.execute("SELECT waiver_id FROM audit.waivers").fetchall()]
        decision = con.execute("SELECT status, waiver_ids_json, actor FROM audit.promotion_decisions").fetchall()
    assert promoted["waiver_ids"] == [waiver_id]
    assert decision == [("promoted", json.dumps([waiver_id]), "Dr Lee (CMIO)")]


def test_one_champion_per_cohort_across_candidate_and_mitigated(con, workspace):
    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    client = MlflowClient()
    mitigated = "cohort_x_mitigated"
    for name in (MODEL, mitigated):
        client.create_registered_model(name)
        client.create_model_version(name, source=str(workspace.artifacts / "model"))
    assert registry.cohort_champion(con, "cohort_x") is None and registry.cohort_champion(client, "cohort_x") is None
    _promote(con, "1")
    assert registry.cohort_champion(con, "cohort_x") == (MODEL, "1")
    registry.promote(con, mitigated, "1", actor="dr.lee", reason="mitigation reviewed", policy_sha256=POLICY)
    assert registry.cohort_champion(con, "cohort_x") == (mitigated, "1")
    assert registry.cohort_champion(client, "cohort_x") == (mitigated, "1")
    assert registry.mlflow_aliases(MODEL) == {} and registry.mlflow_aliases(mitigated) == {"champion": "1"}
    cleared = registry.history(con, MODEL, registry.CHAMPION)[-1]
    assert (cleared.action, cleared.version, cleared.previous_version) == ("clear", None, "1")
    assert mitigated in cleared.reason
    _promote(con, "1")
    assert registry.cohort_champion(con, "cohort_x") == (MODEL, "1")
    assert registry.mlflow_aliases(mitigated) == {}

"""Registry with history: champion/challenger aliases, the append-only alias log, the CLI."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.registry import aliases as registry
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.cli.registry import register

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


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_promote_rollback_champion_and_history(workspace, versions, monkeypatch, capsys):
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(workspace.root))
    monkeypatch.setenv("CLINICAL_MLOPS_WAREHOUSE", str(workspace.warehouse))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.tracking_uri)
    warehouse.connect(workspace.warehouse).close()

    assert _cli(["promote", "--model", MODEL, "--version", "1", "--approver", "Dr Lee (CMIO)",
                 "--reason", "initial release after review"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert (promoted["version"], promoted["actor"], promoted["action"]) == ("1", "Dr Lee (CMIO)", "promote")
    between = _now().isoformat()
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
            "SELECT mode, promoted, actor, reason, policy_sha256 FROM audit.promotion_decisions ORDER BY decided_at"
        ).fetchall()
    assert [m[:4] for m in manual] == [("manual", True, "Dr Lee (CMIO)", "initial release after review"),
                                       ("manual", True, "Dr Lee (CMIO)", "quarterly retrain")]
    assert all(len(m[4]) == 64 for m in manual)

    assert _cli(["rollback", "--model", MODEL]) == 1
    assert "no earlier champion" in capsys.readouterr().err

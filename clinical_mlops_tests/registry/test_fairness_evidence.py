"""Change control's fairness evidence: read from the audit, fail-closed, shared failures by paired non-inferiority."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest

from clinical_mlops.fairness import audit as fairness
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.governance.policy import for_cohort, load_policy
from clinical_mlops.monitoring import incidents
from clinical_mlops.registry import change_control as cc
from clinical_mlops_tests.conftest import READMISSION
from clinical_mlops_tests.registry.test_change_control import _model, _report

POLICY = for_cohort(load_policy(), load_cohort(READMISSION))
"""The shipped policy with the synthetic source's sensitive attributes (race's reference: Caucasian), as the
registry steps apply it: the paired non-inferiority of a shared failure compares a group with its reference."""
CHAMPION, CHALLENGER = _model("1"), _model("2")


def _audit(con, model, verdicts: dict[str, str], *, audit_id: str, policy_sha256: str = POLICY.sha256) -> None:
    """Store recall-gap verdict rows (group -> verdict) of one audit of ``model``."""
    fairness.ensure_tables(con)
    for group, verdict in verdicts.items():
        con.execute(
            """INSERT INTO monitoring.fairness_verdicts (audit_id, evaluated_at, cohort, model_name, model_version,
                   model_role, slice, "group", reference_group, n, rule, severity, blocking, bound, estimate, lower,
                   upper, p_adjusted, verdict, reason, policy_version, policy_sha256)
               VALUES (?, ?, 'c', ?, ?, 'candidate', 'race', ?, 'Caucasian', 900, 'recall_gap', 'block_promotion',
                       TRUE, 0.1, -0.3, -0.4, -0.2, 0.01, ?, 'test', ?, ?)""",
            [audit_id, datetime(2026, 11, 28), model.name, model.version, group, verdict, POLICY.version,
             policy_sha256])


def _sampler(worse: bool) -> cc.SliceSampler:
    """Champion and challenger scores on the same rows; the champion under-recalls AfricanAmerican."""
    rng = np.random.default_rng(3)
    n = 4000
    race = rng.choice(["Caucasian", "AfricanAmerican"], n, p=[0.7, 0.3])
    y = (rng.random(n) < 0.3).astype(float)
    aa = race == "AfricanAmerican"
    champion = np.clip(0.3 + 0.4 * y * np.where(aa, 0.5, 1.0) + rng.normal(0, 0.15, n), 0, 1)
    challenger = champion.copy()
    if worse:
        challenger[aa & (y == 1)] *= 0.3
    frame = pd.DataFrame({"race": race})
    scores, thresholds = [champion, challenger], [0.5, 0.5]
    base = cc.paired_bootstrap(y, scores, thresholds, {"race": race}, n_boot=100, seed=1, min_group_size=100)
    return cc.SliceSampler(y, scores, thresholds, frame, 100, 1, 0.95, 100, base)


def test_no_audit_is_insufficient_evidence_that_blocks(con):
    report = _report(None, CHALLENGER, fairness=cc.compare_fairness(con, POLICY, "c", None, CHALLENGER, None))
    assert report.fairness.source == "not_assessed"
    assert "fairness was never assessed" in report.fairness.reason
    decision = cc.decide(report, POLICY)
    assert decision.status == cc.BLOCKED and decision.evidence_status == "insufficient_evidence"


def test_an_audit_under_another_policy_is_not_evidence(con):
    _audit(con, CHALLENGER, {"AfricanAmerican": "pass"}, audit_id="old", policy_sha256="0" * 64)
    fair = cc.compare_fairness(con, POLICY, "c", None, CHALLENGER, None)
    assert fair.source == "other_policy" and "re-materialize c/fairness_report" in fair.reason
    assert cc.decide(_report(None, CHALLENGER, fairness=fair), POLICY).status == cc.BLOCKED


def test_all_groups_insufficient_waits_for_approval_never_promoted(con):
    _audit(con, CHALLENGER, {"AfricanAmerican": "insufficient_evidence", "Asian": "insufficient_evidence"},
           audit_id="a2")
    fair = cc.compare_fairness(con, POLICY, "c", None, CHALLENGER, None)
    assert fair.source == "fairness_audit" and fair.rules[0].status == "insufficient_evidence"
    decision = cc.decide(_report(None, CHALLENGER, fairness=fair), POLICY)
    assert decision.status == cc.PENDING_APPROVAL and not decision.passed
    assert "--criterion fairness:recall_gap" in decision.next_command


def test_a_passing_audit_passes(con):
    _audit(con, CHALLENGER, {"AfricanAmerican": "pass", "Asian": "pass"}, audit_id="a2")
    fair = cc.compare_fairness(con, POLICY, "c", None, CHALLENGER, None)
    assert cc.decide(_report(None, CHALLENGER, fairness=fair), POLICY).status == cc.PROMOTED


@pytest.mark.parametrize("worse,status,decided", [(False, "pass", cc.PROMOTED), (True, "fail", cc.BLOCKED)])
def test_a_failure_shared_with_the_champion_is_judged_by_paired_non_inferiority(con, worse, status, decided):
    _audit(con, CHAMPION, {"AfricanAmerican": "fail"}, audit_id="a1")
    _audit(con, CHALLENGER, {"AfricanAmerican": "fail"}, audit_id="a2")
    incident = incidents.open_incident(con, policy=POLICY, severity="block_promotion", cohort="c",
                                       model="c_candidate v1", check="c/fairness_report:recall_gap_within_policy",
                                       evidence={"audit_id": "a1"})
    fair = cc.compare_fairness(con, POLICY, "c", CHAMPION, CHALLENGER, _sampler(worse))
    (rule,) = fair.rules
    assert rule.new_failures == () and rule.failing == ("race=AfricanAmerican",)
    (shared,) = rule.shared
    assert shared["status"] == status
    if worse:
        assert shared["upper"] < -fair.margin
    else:
        assert shared["delta"] == 0.0 and shared["lower"] >= -fair.margin
    assert rule.incidents == (incident.incident_id,)
    report = _report(CHAMPION, _model("2", input_extracts=(("month_000.csv", "a" * 64), ("m1.csv", "b" * 64))),
                     fairness=fair)
    decision = cc.decide(report, POLICY)
    assert decision.status == decided
    assert decision.incidents == (incident.incident_id,), "the open incident is named in the decision"
    if worse:
        assert incident.incident_id in decision.summary
    again = cc.ChangeControlReport.from_json(report.to_json())
    assert cc.decide(again, POLICY) == decision


def test_a_failure_the_champion_does_not_have_is_a_plain_fail(con):
    _audit(con, CHAMPION, {"AfricanAmerican": "pass"}, audit_id="a1")
    _audit(con, CHALLENGER, {"AfricanAmerican": "fail"}, audit_id="a2")
    fair = cc.compare_fairness(con, POLICY, "c", CHAMPION, CHALLENGER, _sampler(False))
    assert fair.rules[0].status == "fail" and fair.new_failures == ("recall_gap:race=AfricanAmerican",)
    assert fair.rules[0].shared == ()


def test_the_margin_has_a_documented_default():
    assert cc.non_inferiority_margin(POLICY) == cc.DEFAULT_NON_INFERIORITY_MARGIN == 0.02
    declared = SimpleNamespace(change_control=SimpleNamespace(acceptance=SimpleNamespace(
        fairness_non_inferiority_margin=0.05)))  # change_control.acceptance.fairness_non_inferiority_margin
    assert cc.non_inferiority_margin(declared) == 0.05


def test_the_mitigated_version_derived_from_the_candidate_is_found():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ml")
    con.execute("CREATE TABLE ml.model_versions (registered_at TIMESTAMP, cohort VARCHAR, role VARCHAR, "
                "model_name VARCHAR, model_version VARCHAR, params_json VARCHAR)")
    for when, version, base in ((1, "1", "c_candidate/1"), (2, "2", "c_candidate/2"), (3, "3", "c_candidate/1")):
        con.execute("INSERT INTO ml.model_versions VALUES (?, 'c', 'mitigated', 'c_mitigated', ?, ?)",
                    [datetime(2026, 11, when), version,
                     f'{{"base_model": "{base}", "mitigation": "group_thresholds"}}'])
    assert cc.derived_mitigation(con, "c", "c_candidate", "1")["model_version"] == "3"
    assert cc.derived_mitigation(con, "c", "c_candidate", "2")["model_version"] == "2"
    assert cc.derived_mitigation(con, "c", "c_candidate", "9") is None
    row = cc.derived_mitigation(con, "c", "c_candidate", "2")
    assert "group_thresholds" in cc.review_reason(row)

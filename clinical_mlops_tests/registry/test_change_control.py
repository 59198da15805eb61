"""Change control: modification kinds and the envelope, paired bootstrap, the promotion decision."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from clinical_mlops.registry import change_control as cc
from clinical_mlops.features import build as features
from clinical_mlops.training import modelling, fit as training
from clinical_mlops.registry import aliases as registry
from clinical_mlops.core import warehouse
from clinical_mlops.features.cohort import cohorts_dir, load_cohort
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH, for_cohort, load_policy, parse_policy
from clinical_mlops_tests.conftest import READMISSION, synthetic_source  # noqa: E402
from clinical_mlops_tests.helpers import land_and_validate

SYNTHETIC_SOURCE = synthetic_source()

POLICY = for_cohort(load_policy(), load_cohort(READMISSION))
"""The shipped policy with the synthetic source's sensitive attributes, as the registry steps apply it."""


def _model(version: str = "1", **changes) -> cc.ModelDescription:
    base = cc.ModelDescription(
        name="c_candidate", version=version, run_id=f"run{version}", algorithm="hist_gradient_boosting",
        params={"algorithm": "hist_gradient_boosting", "max_iter": 300, "learning_rate": 0.05, "seed": 7},
        numeric=("age_years_mid", "number_inpatient"), categorical=("a1c_result",),
        input_extracts=(("month_000.csv", "a" * 64),), cohort_spec_sha256="s" * 64, operating_threshold=0.2,
    )
    return dataclasses.replace(base, **changes)


def _kinds(champion, challenger) -> list[str]:
    return [m.kind for m in cc.classify_modifications(champion, challenger)]


def _envelope(champion, challenger) -> cc.Envelope:
    return cc.check_envelope(cc.classify_modifications(champion, challenger),
                             POLICY.change_control.allowed_modifications, POLICY.change_control.requires_new_review)


# ---------------------------------------------------------------------------------------------
# what changed, and whether the policy allows it
# ---------------------------------------------------------------------------------------------


def test_a_challenger_with_an_extra_feature_requires_new_review():
    champion = _model("1")
    challenger = _model("2", numeric=(*champion.numeric, "num_medications"),
                        input_extracts=(*champion.input_extracts, ("month_001.csv", "b" * 64)))
    mods = cc.classify_modifications(champion, challenger)
    assert [m.kind for m in mods] == ["feature_set_change", "retrain_on_new_data"]
    assert mods[0].detail == "added num_medications"
    envelope = _envelope(champion, challenger)
    assert not envelope.inside
    assert envelope.requires_new_review == ("feature_set_change",)
    assert envelope.describe() == "requires new review: feature_set_change"


@pytest.mark.parametrize("changes,kinds,inside", [
    ({"input_extracts": (("month_000.csv", "a" * 64), ("month_001.csv", "b" * 64))}, ["retrain_on_new_data"], True),
    ({"input_extracts": (("month_000.csv", "c" * 64),)}, ["retrain_on_new_data"], True),
    ({}, [cc.NO_MODIFICATION], True),
    ({"params": {"algorithm": "hist_gradient_boosting", "max_iter": 300, "learning_rate": 0.05, "seed": 7,
                 "calibration": "isotonic"}}, ["recalibration"], True),
    ({"params": {"algorithm": "hist_gradient_boosting", "max_iter": 500, "learning_rate": 0.05, "seed": 7}},
     ["hyperparameter_change"], False),
    ({"algorithm": "logistic_regression", "params": {"algorithm": "logistic_regression", "C": 0.5}},
     ["algorithm_change"], False),
    ({"categorical": ()}, ["feature_set_change"], False),
    ({"numeric": ("age_years_mid",), "categorical": ("a1c_result", "number_inpatient")}, ["feature_set_change"], False),
    ({"cohort_spec_sha256": "t" * 64}, ["cohort_spec_change"], False),
])
def test_modification_kinds_and_envelope(changes, kinds, inside):
    champion, challenger = _model("1"), _model("2", **changes)
    assert _kinds(champion, challenger) == kinds
    envelope = _envelope(champion, challenger)
    assert envelope.inside is inside
    if "cohort_spec_change" in kinds:
        assert envelope.not_covered == ("cohort_spec_change",), "a kind the policy does not name fails closed"


# ---------------------------------------------------------------------------------------------
# paired bootstrap
# ---------------------------------------------------------------------------------------------


def _scores(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(float)
    good = np.clip(0.15 + 0.25 * y + rng.normal(0, 0.15, n), 0, 1).round(3)
    worse = np.clip(0.15 + 0.10 * y + rng.normal(0, 0.15, n), 0, 1).round(3)
    groups = {"race": rng.choice(["A", "B", "C"], n, p=[0.7, 0.28, 0.02])}
    return y, good, worse, groups


def test_paired_bootstrap_point_estimates_equal_sklearn():
    y, good, worse, groups = _scores()
    result = cc.paired_bootstrap(y, [worse, good], [0.3, 0.3], groups, n_boot=100, seed=1, min_group_size=100)
    overall = result.table[result.table["attribute"] == "overall"].set_index("metric")
    for metric, fn in (("auroc", roc_auc_score), ("auprc", average_precision_score), ("brier", brier_score_loss)):
        assert overall.loc[metric, "champion"] == pytest.approx(fn(y, worse))
        assert overall.loc[metric, "challenger"] == pytest.approx(fn(y, good))
    assert overall.loc["recall", "challenger"] == pytest.approx(((good >= 0.3) & (y == 1)).sum() / y.sum())
    # the better challenger's AUROC gain is significant; the CI brackets the delta
    auroc = overall.loc["auroc"]
    assert 0 < auroc["lower"] <= auroc["delta"] <= auroc["upper"]
    small = result.table[(result.table["group"] == "C") & (result.table["metric"] == "auroc")].iloc[0]
    assert small["n"] < 100 and np.isnan(small["lower"]), "no interval under the minimum group size"
    big = result.table[(result.table["group"] == "A") & (result.table["metric"] == "auroc")].iloc[0]
    assert big["lower"] < big["upper"]


def test_paired_bootstrap_of_a_model_against_itself_is_exactly_zero():
    y, good, _, groups = _scores(1500)
    table = cc.paired_bootstrap(y, [good, good], [0.3, 0.3], groups, n_boot=50, seed=2, min_group_size=50).table
    deltas = table[["delta", "lower", "upper"]].to_numpy()
    assert np.nanmax(np.abs(deltas)) == 0.0


def test_paired_bootstrap_is_deterministic_for_a_seed():
    y, good, worse, _ = _scores(1000)
    first = cc.paired_bootstrap(y, [worse, good], [0.3, 0.3], n_boot=40, seed=5).table
    again = cc.paired_bootstrap(y, [worse, good], [0.3, 0.3], n_boot=40, seed=5).table
    pd.testing.assert_frame_equal(first, again)


# ---------------------------------------------------------------------------------------------
# the decision
# ---------------------------------------------------------------------------------------------


def _assessed(*rules: cc.RuleAssessment, not_assessable=(), champion_failures=(), challenger_failures=()):
    rules = rules or (cc.RuleAssessment("recall_gap", "pass", "all 6 group(s) inside the bound"),)
    return cc.FairnessComparison("fairness_audit", "audit a1 of the challenger", "a1", None, rules,
                                 tuple(not_assessable), tuple(champion_failures), tuple(challenger_failures))


NOT_AUDITED = cc.FairnessComparison("not_assessed", "fairness was never assessed for c_candidate v2: "
                                    "materialize c/fairness_report")


def _report(champion, challenger, *, delta_ci=(-0.01, 0.02), fairness=None, drift=(), auroc=0.70, brier=0.09,
            ci=0.03) -> cc.ChangeControlReport:
    rows = []
    for metric, value in (("auroc", auroc), ("brier", brier)):
        rows.append({"attribute": "overall", "group": "all", "n": 2000, "n_positive": 240, "metric": metric,
                     "champion": value - 0.005 if champion else float("nan"), "challenger": value,
                     "delta": 0.005 if champion else float("nan"),
                     "lower": delta_ci[0] if champion else float("nan"), "upper": delta_ci[1] if champion else float("nan"),
                     "challenger_lower": value - ci, "challenger_upper": value + ci})
    mods = tuple(cc.classify_modifications(champion, challenger)) if champion else ()
    envelope = cc.check_envelope(mods, POLICY.change_control.allowed_modifications,
                                 POLICY.change_control.requires_new_review) if champion else None
    return cc.ChangeControlReport(
        cohort="c", model_name=challenger.name, created_at="2026-11-28T00:00:00Z", policy_sha256=POLICY.sha256,
        policy_version=POLICY.version, challenger=challenger, champion=champion, evaluation_rows=2000,
        evaluation_positives=240, evaluation_ids_sha256="e" * 64, metrics=pd.DataFrame(rows), modifications=mods,
        envelope=envelope, fairness=fairness or _assessed(), drift=tuple(drift), caveats=(),
        n_boot=200, seed=1, confidence=0.95, min_group_size=100,
    )


RETRAINED = {"input_extracts": (("month_000.csv", "a" * 64), ("month_001.csv", "b" * 64))}


def _status(decision, name):
    return next(c for c in decision.criteria if c.name == name).status


def test_retrain_without_regression_passes():
    decision = cc.decide(_report(_model("1"), _model("2", **RETRAINED)), POLICY)
    assert decision.passed and decision.status == cc.PROMOTED and decision.mode == "champion_comparison"
    assert [c.name for c in decision.criteria] == [
        "no_significant_auroc_regression", "inside_change_envelope", "fairness_assessed", "fairness:recall_gap",
        "not_assessable_groups"]
    assert all(c.status == "pass" for c in decision.criteria) and decision.next_command is None
    assert decision.modification_kinds == ("retrain_on_new_data",)


@pytest.mark.parametrize("delta_ci,status", [((-0.015, 0.02), "pass"), ((-0.035, -0.025), "fail"),
                                             ((-0.035, 0.01), "insufficient_evidence")])
def test_auroc_regression_is_judged_on_the_paired_interval(delta_ci, status):
    decision = cc.decide(_report(_model("1"), _model("2", **RETRAINED), delta_ci=delta_ci), POLICY)
    assert _status(decision, "no_significant_auroc_regression") == status
    assert decision.status == {"pass": cc.PROMOTED, "fail": cc.BLOCKED,
                               "insufficient_evidence": cc.PENDING_APPROVAL}[status]
    if status == "fail":
        assert decision.summary.startswith("blocked: no_significant_auroc_regression")
    if status == "insufficient_evidence":
        assert decision.next_command == cc.waive_command("c", "c_candidate", "2", "no_significant_auroc_regression")


def test_a_new_fairness_failure_blocks():
    rule = cc.RuleAssessment("recall_gap", "fail", "race=B outside the bound; a failure the champion does not have",
                             failing=("race=B",), new_failures=("race=B",))
    fairness = _assessed(rule, challenger_failures=("recall_gap:race=B",))
    decision = cc.decide(_report(_model("1"), _model("2", **RETRAINED), fairness=fairness), POLICY)
    assert decision.status == cc.BLOCKED and [c.name for c in decision.failed] == ["fairness:recall_gap"]
    assert decision.summary.startswith("blocked: fairness:recall_gap")


def test_extra_feature_is_blocked_by_the_envelope_even_when_better():
    challenger = _model("2", numeric=("age_years_mid", "number_inpatient", "num_medications"))
    decision = cc.decide(_report(_model("1"), challenger, delta_ci=(0.01, 0.04)), POLICY)
    assert [c.name for c in decision.failed] == ["inside_change_envelope"]
    assert "requires new review: feature_set_change" in decision.summary


@pytest.mark.parametrize("auroc,ci,status", [
    (0.66, 0.03, "pass"),                    # [0.63, 0.69] clears 0.60
    (0.62, 0.04, "insufficient_evidence"),   # point above 0.60, interval [0.58, 0.66] straddles it
    (0.55, 0.03, "fail"),                    # [0.52, 0.58] below
])
def test_min_auroc_is_judged_on_the_interval_not_the_point(auroc, ci, status):
    decision = cc.decide(_report(None, _model("1"), auroc=auroc, brier=0.10, ci=ci), POLICY)
    assert decision.mode == "absolute" and _status(decision, "min_auroc") == status
    assert decision.passed is (status == "pass")
    assert decision.status != cc.PROMOTED or status == "pass"


@pytest.mark.parametrize("brier,status", [(0.10, "pass"), (0.14, "insufficient_evidence"), (0.19, "fail")])
def test_max_brier_is_judged_on_the_interval(brier, status):
    decision = cc.decide(_report(None, _model("1"), auroc=0.70, brier=brier), POLICY)
    assert _status(decision, "max_brier") == status
    assert {c.name for c in decision.criteria} == {"min_auroc", "max_brier", "fairness_assessed",
                                                   "fairness:recall_gap", "not_assessable_groups"}


def test_no_fairness_audit_blocks_and_no_waiver_can_replace_it():
    report = _report(None, _model("2"), fairness=NOT_AUDITED)
    waiver = _waiver("fairness:recall_gap")
    for waivers in ({}, {"fairness:recall_gap": waiver, "fairness_assessed": _waiver("fairness_assessed")}):
        decision = cc.decide(report, POLICY, waivers=waivers)
        assert decision.status == cc.BLOCKED and not decision.passed
        assert _status(decision, "fairness:recall_gap") == "insufficient_evidence"
        assert "fairness was never assessed" in decision.summary
        assert decision.waiver_ids == ()


def test_insufficient_fairness_waits_for_a_waiver_by_a_named_approver():
    rule = cc.RuleAssessment("recall_gap", "insufficient_evidence", "no group could be assessed",
                             insufficient_required=("race=B", "race=C"))
    report = _report(None, _model("2"), fairness=_assessed(rule))
    pending = cc.decide(report, POLICY)
    assert pending.status == cc.PENDING_APPROVAL and not pending.passed
    assert [c.name for c in pending.missing] == ["fairness:recall_gap"]
    assert pending.next_command == ('clinical-mlops waive --cohort c --model c_candidate --version 2 '
                                    '--criterion fairness:recall_gap --approver "<name>" --reason "<why>"')
    waiver = _waiver("fairness:recall_gap")
    decision = cc.decide(report, POLICY, waivers={"fairness:recall_gap": waiver})
    assert decision.status == cc.PROMOTED and decision.waiver_ids == (waiver.waiver_id,)
    assert "waived by Dr Lee (CMIO)" in next(c for c in decision.criteria if c.name == "fairness:recall_gap").reason
    expired = cc.decide(report, POLICY, waivers={"fairness:recall_gap": waiver}, now=waiver.expires_at)
    assert expired.status == cc.PENDING_APPROVAL and expired.waiver_ids == ()
    other = dataclasses.replace(waiver, model_version="1")
    assert cc.decide(report, POLICY, waivers={"fairness:recall_gap": other}).status == cc.PENDING_APPROVAL


def test_a_waiver_never_covers_a_failure():
    rule = cc.RuleAssessment("recall_gap", "fail", "race=B outside", failing=("race=B",), new_failures=("race=B",))
    decision = cc.decide(_report(None, _model("2"), fairness=_assessed(rule)), POLICY,
                         waivers={"fairness:recall_gap": _waiver("fairness:recall_gap")})
    assert decision.status == cc.BLOCKED and decision.waiver_ids == ()


def test_not_assessable_groups_need_an_acknowledgement():
    report = _report(None, _model("2"), fairness=_assessed(not_assessable=("recall_gap: race=Asian (n=12)",)))
    # the shipped policy's standing acknowledgement by the governance board: listed and named, passes
    standing = cc.decide(report, POLICY)
    criterion = next(c for c in standing.criteria if c.name == cc.NOT_ASSESSABLE_GROUPS)
    assert standing.status == cc.PROMOTED and criterion.status == "pass"
    assert "race=Asian" in criterion.reason and "governance board" in criterion.reason
    # without it, each promotion needs a named approver's acknowledgement (a waiver)
    unacknowledged = dataclasses.replace(
        POLICY, fairness=dataclasses.replace(POLICY.fairness, not_assessable_acknowledged_by=None))
    decision = cc.decide(report, unacknowledged)
    assert decision.status == cc.PENDING_APPROVAL
    assert [c.name for c in decision.missing] == [cc.NOT_ASSESSABLE_GROUPS]
    assert "race=Asian" in decision.summary
    acknowledged = cc.decide(report, unacknowledged,
                             waivers={cc.NOT_ASSESSABLE_GROUPS: _waiver(cc.NOT_ASSESSABLE_GROUPS)})
    assert acknowledged.passed


def test_a_mitigated_challenger_is_at_best_pending_approval():
    mitigated = _model("4", name="c_mitigated", algorithm="hist_gradient_boosting+group_thresholds",
                       params={"algorithm": "hist_gradient_boosting+group_thresholds", "mitigation": "group_thresholds"})
    review = "a mitigation (group_thresholds) of c_candidate/2 is a modification"
    alone = cc.decide(_report(None, mitigated), POLICY, review=review)
    assert alone.status == cc.PENDING_APPROVAL and not alone.passed
    assert alone.next_command == 'clinical-mlops promote --model c_mitigated --version 4 --approver "<name>" --reason "<why>"'
    against = cc.decide(_report(_model("1"), mitigated, delta_ci=(0.0, 0.02)), POLICY, review=review)
    assert against.status == cc.PENDING_APPROVAL, "the algorithm change is the review's to approve, not a fail"
    assert _status(against, "inside_change_envelope") == "insufficient_evidence"
    rule = cc.RuleAssessment("recall_gap", "insufficient_evidence", "1 group(s) without sufficient evidence")
    waits = cc.decide(_report(None, mitigated, fairness=_assessed(rule)), POLICY, review=review)
    assert waits.next_command.endswith('--version 4 --waive fairness:recall_gap --approver "<name>" --reason "<why>"')
    failing = cc.RuleAssessment("recall_gap", "fail", "race=B outside", failing=("race=B",), new_failures=("race=B",))
    assert cc.decide(_report(None, mitigated, fairness=_assessed(failing)), POLICY, review=review).status == cc.BLOCKED


def _waiver(criterion: str, version: str = "2", model: str = "c_candidate"):
    from datetime import datetime

    from clinical_mlops.governance.waivers import Waiver

    return Waiver(f"w-{criterion}", "c", model, version, criterion, ("insufficient",), "Dr Lee (CMIO)",
                  "small group; reviewed by the board", datetime(2026, 11, 28), datetime(2999, 1, 1), POLICY.sha256)


def test_drift_blocks_only_when_the_policy_says_so():
    text = SHIPPED_POLICY_PATH.read_text().replace("severity: warn                   # warn | block_promotion",
                                                   "severity: block_promotion")
    blocking = parse_policy(text)
    assert blocking.drift.blocking and blocking.sha256 != POLICY.sha256
    unaddressed = ({"extract_id": "month_002.csv", "dataset_drift": True, "challenger_trained_on_it": False},)
    report = _report(_model("1"), _model("2", **RETRAINED), drift=unaddressed)
    assert cc.decide(report, POLICY).passed, "warn: reported, not blocking"
    decision = cc.decide(report, blocking)
    assert [c.name for c in decision.failed] == ["drift_addressed"]
    addressed = ({"extract_id": "month_001.csv", "dataset_drift": True, "challenger_trained_on_it": True},)
    assert cc.decide(_report(_model("1"), _model("2", **RETRAINED), drift=addressed), blocking).passed
    assert cc.decide(_report(_model("1"), _model("2", **RETRAINED)), blocking).status == cc.BLOCKED, \
        "a blocking drift policy with no drift report: no evidence, blocked"


def test_report_round_trips_and_renders(tmp_path):
    report = _report(_model("1"), _model("2", numeric=("age_years_mid",)))
    again = cc.ChangeControlReport.from_json(report.to_json())
    assert cc.decide(again, POLICY) == cc.decide(report, POLICY)
    assert again.envelope == report.envelope and again.champion == report.champion
    markdown = cc.render_markdown(report, cc.decide(report, POLICY))
    assert "PROMOTION BLOCKED" in markdown and "feature_set_change" in markdown and "removed number_inpatient" in markdown
    for section in ("## Acceptance criteria", "## Held-out performance", "## Fairness verdicts", "## Drift context",
                    "## What differs"):
        assert section in markdown


# ---------------------------------------------------------------------------------------------
# end to end on a warehouse and registry: retrain inside the envelope, extra feature outside it
# ---------------------------------------------------------------------------------------------


def _fit(con, spec, workspace) -> cc.ModelDescription:
    features.build_features(con, spec)
    features.assign_split(con, spec)
    params = modelling.GradientBoostingParams(max_iter=25)
    outcome = training.train_and_register(
        con, spec, role="candidate", pipeline=modelling.build_gradient_boosting(spec, params),
        params=params.as_dict(), tracking_uri=workspace.tracking_uri, artifact_root=workspace.artifacts)
    return cc.describe_model(con, outcome.model.name, outcome.model.version)


def _narrowed_cohorts(tmp: Path) -> Path:
    """A copy of the shipped cohorts folder (YAML and SQL) whose readmission cohort drops ``metformin``."""
    import shutil

    folder = tmp / "cohorts"
    shutil.copytree(cohorts_dir(), folder)
    path = folder / "readmission_30d.yaml"
    text = path.read_text()
    assert "insulin, metformin]" in text
    path.write_text(text.replace("insulin, metformin]", "insulin]"))
    return folder


def test_change_control_on_registered_models(workspace, small_encounters):
    full = load_cohort(READMISSION)
    narrow = load_cohort(READMISSION, _narrowed_cohorts(workspace.root))
    assert full.name == narrow.name == READMISSION and full.spec_hash != narrow.spec_hash
    assert set(full.features) - set(narrow.features) == {"metformin"}
    con = warehouse.connect(workspace.warehouse)
    land_and_validate(con, small_encounters.iloc[:1500], workspace.landing / "month_000.csv", pseudonym_key=b"k")
    champion = _fit(con, narrow, workspace)
    registry.promote(con, champion.name, champion.version, actor="test", reason="first", policy_sha256=POLICY.sha256)

    land_and_validate(con, small_encounters.iloc[1500:], workspace.landing / "month_001.csv", pseudonym_key=b"k")
    retrained = _fit(con, narrow, workspace)
    report = cc.build_report(con, narrow, POLICY, challenger=retrained, champion=champion, n_boot=60, seed=3)
    assert [m.kind for m in report.modifications] == ["retrain_on_new_data"]
    assert report.envelope.inside
    assert report.score_sources == {champion.label: "scored from the registry",
                                    retrained.label: "stored test predictions"}
    assert report.evaluation_rows == features.summarise_split(con, narrow).test_rows
    assert report.fairness.source == "not_assessed", "no fairness audit: assessed nowhere, never a pass"
    assert cc.decide(report, POLICY).status == cc.BLOCKED

    wider = _fit(con, full, workspace)
    report = cc.build_report(con, full, POLICY, challenger=wider, champion=champion, n_boot=60, seed=3)
    decision = cc.decide(report, POLICY)
    assert {m.kind for m in report.modifications} == {"feature_set_change", "cohort_spec_change", "retrain_on_new_data"}
    assert not decision.passed
    assert "inside_change_envelope" in {c.name for c in decision.failed}
    assert report.envelope.requires_new_review == ("feature_set_change",)
    assert any("different cohort spec" in c for c in report.caveats)

    markdown = cc.render_markdown(report, decision)
    report_id = cc.store_report(con, report, decision, markdown)
    stored_id, stored = cc.latest_report(con, full.name)
    assert stored_id == report_id and cc.decide(stored, POLICY) == decision
    con.close()

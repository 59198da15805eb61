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
from clinical_mlops.ingestion import landing
from clinical_mlops.training import modelling, fit as training
from clinical_mlops.registry import aliases as registry
from clinical_mlops.validation import rules as validation
from clinical_mlops.core import warehouse
from clinical_mlops.features.cohort import COHORTS_DIR, parse_cohort_spec
from clinical_mlops.governance.policy import DEFAULT_POLICY_PATH, load_policy, parse_policy

POLICY = load_policy()


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


def _report(champion, challenger, *, delta_ci=(-0.01, 0.02), fairness=("computed_gap_rules", (), ()),
            drift=(), auroc=0.70, brier=0.09) -> cc.ChangeControlReport:
    rows = []
    for metric, value in (("auroc", auroc), ("brier", brier)):
        rows.append({"attribute": "overall", "group": "all", "n": 2000, "n_positive": 240, "metric": metric,
                     "champion": value - 0.005 if champion else float("nan"), "challenger": value,
                     "delta": 0.005 if champion else float("nan"),
                     "lower": delta_ci[0] if champion else float("nan"), "upper": delta_ci[1] if champion else float("nan"),
                     "challenger_lower": value - 0.03, "challenger_upper": value + 0.03})
    mods = tuple(cc.classify_modifications(champion, challenger)) if champion else ()
    envelope = cc.check_envelope(mods, POLICY.change_control.allowed_modifications,
                                 POLICY.change_control.requires_new_review) if champion else None
    return cc.ChangeControlReport(
        cohort="c", model_name=challenger.name, created_at="2026-11-28T00:00:00Z", policy_sha256=POLICY.sha256,
        policy_version=POLICY.version, challenger=challenger, champion=champion, evaluation_rows=2000,
        evaluation_positives=240, evaluation_ids_sha256="e" * 64, metrics=pd.DataFrame(rows), modifications=mods,
        envelope=envelope, fairness=cc.FairnessComparison(*fairness), drift=tuple(drift), caveats=(),
        n_boot=200, seed=1, confidence=0.95, min_group_size=100,
    )


RETRAINED = {"input_extracts": (("month_000.csv", "a" * 64), ("month_001.csv", "b" * 64))}


def test_retrain_without_regression_passes():
    decision = cc.decide(_report(_model("1"), _model("2", **RETRAINED)), POLICY)
    assert decision.passed and decision.mode == "champion_comparison"
    assert [c.name for c in decision.criteria] == [
        "no_significant_auroc_regression", "inside_change_envelope", "no_new_fairness_failures"]
    assert decision.modification_kinds == ("retrain_on_new_data",)


@pytest.mark.parametrize("kwargs,failing", [
    ({"delta_ci": (-0.035, 0.01)}, "no_significant_auroc_regression"),
    ({"fairness": ("fairness_verdicts", (), ("recall_gap:race",))}, "no_new_fairness_failures"),
])
def test_regression_or_new_fairness_failure_blocks(kwargs, failing):
    decision = cc.decide(_report(_model("1"), _model("2", **RETRAINED), **kwargs), POLICY)
    assert not decision.passed
    assert [c.name for c in decision.failed] == [failing]
    assert decision.summary.startswith("blocked: " + failing)


def test_a_fairness_failure_the_champion_already_had_is_not_new():
    fairness = ("fairness_verdicts", ("recall_gap:race",), ("recall_gap:race",))
    assert cc.decide(_report(_model("1"), _model("2", **RETRAINED), fairness=fairness), POLICY).passed


def test_extra_feature_is_blocked_by_the_envelope_even_when_better():
    challenger = _model("2", numeric=("age_years_mid", "number_inpatient", "num_medications"))
    decision = cc.decide(_report(_model("1"), challenger, delta_ci=(0.01, 0.04)), POLICY)
    assert [c.name for c in decision.failed] == ["inside_change_envelope"]
    assert "requires new review: feature_set_change" in decision.summary


@pytest.mark.parametrize("auroc,brier,passed", [(0.66, 0.10, True), (0.58, 0.10, False), (0.66, 0.16, False)])
def test_absolute_criteria_without_a_champion(auroc, brier, passed):
    decision = cc.decide(_report(None, _model("1"), auroc=auroc, brier=brier), POLICY)
    assert decision.mode == "absolute" and decision.passed is passed
    assert {c.name for c in decision.criteria} == {"min_auroc", "max_brier", "no_new_fairness_failures"}


def test_drift_blocks_only_when_the_policy_says_so():
    text = DEFAULT_POLICY_PATH.read_text().replace("severity: warn                   # warn | block_promotion",
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


def _land(con, frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n")
    validation.validate_extract(con, landing.land_extract(con, path).extract_id, pseudonym_key=b"k")


def _fit(con, spec, workspace) -> cc.ModelDescription:
    features.build_features(con, spec)
    features.assign_split(con, spec)
    params = modelling.GradientBoostingParams(max_iter=25)
    outcome = training.train_and_register(
        con, spec, role="candidate", pipeline=modelling.build_gradient_boosting(spec, params),
        params=params.as_dict(), tracking_uri=workspace.tracking_uri, artifact_root=workspace.artifacts)
    return cc.describe_model(con, outcome.model.name, outcome.model.version)


def test_change_control_on_registered_models(workspace, small_encounters):
    full_text = (COHORTS_DIR / "readmission_30d.yaml").read_text()
    full = parse_cohort_spec(full_text)
    narrow = parse_cohort_spec(full_text.replace("insulin, metformin]", "insulin]"))
    assert set(full.features) - set(narrow.features) == {"metformin"}
    con = warehouse.connect(workspace.warehouse)
    _land(con, small_encounters.iloc[:1500], workspace.landing / "month_000.csv")
    champion = _fit(con, narrow, workspace)
    registry.promote(con, champion.name, champion.version, actor="test", reason="first", policy_sha256=POLICY.sha256)

    _land(con, small_encounters.iloc[1500:], workspace.landing / "month_001.csv")
    retrained = _fit(con, narrow, workspace)
    report = cc.build_report(con, narrow, POLICY, challenger=retrained, champion=champion, n_boot=60, seed=3)
    assert [m.kind for m in report.modifications] == ["retrain_on_new_data"]
    assert report.envelope.inside
    assert report.score_sources == {champion.label: "scored from the registry",
                                    retrained.label: "stored test predictions"}
    assert report.evaluation_rows == features.summarise_split(con, narrow).test_rows
    assert report.fairness.source == "computed_gap_rules"

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

"""The fairness gate's evidence rule: rule status, required and not-assessable groups, missing
references, the minimum detectable gap, and the gate the registry reads back from the warehouse."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from clinical_mlops.core import evidence, warehouse
from clinical_mlops.fairness import audit as fairness, report as fairness_report
from clinical_mlops.governance.policy import SHIPPED_POLICY_PATH, for_cohort, parse_policy
from clinical_mlops_tests.conftest import READMISSION
from clinical_mlops_tests.governance._policy_text import declare_source_attributes


def _policy(edit=None):
    """The shipped policy reduced to race (required: AfricanAmerican) and the recall gap, edited by ``edit``."""
    raw = yaml.safe_load(SHIPPED_POLICY_PATH.read_text())
    fp = raw["fairness"]
    fp["sensitive_attributes"] = {"race": {"reference": "Caucasian", "required_groups": ["AfricanAmerican"]}}
    fp["intersections"] = []
    fp.pop("required_population_share", None)
    fp["metrics"] = {"recall_gap": fp["metrics"]["recall_gap"]}
    if edit is not None:
        edit(fp)
    return parse_policy(yaml.safe_dump(raw, sort_keys=False))


def _frame(sizes: dict[str, int], *, penalty: dict[str, float] | None = None, seed: int = 0) -> pd.DataFrame:
    """Well-ranked scores for every race group of the given size; a group's positives lose ``penalty``."""
    rng = np.random.default_rng(seed)
    race = np.repeat(list(sizes), list(sizes.values()))
    rng.shuffle(race)
    y = (rng.random(race.size) < 0.3).astype(int)
    score = rng.normal(0.2 + 0.4 * y, 0.1)
    for group, drop in (penalty or {}).items():
        score[(race == group) & (y == 1)] -= drop
    return pd.DataFrame({"label": y, "score": np.clip(score, 0.001, 0.999), "race": race})


def _audit(frame: pd.DataFrame, policy) -> fairness.FairnessAudit:
    return fairness.audit(frame, threshold=0.4, policy=policy, n_bootstrap=80, seed=3)


def _row(result, group: str, rule: str = "recall_gap") -> pd.Series:
    v = result.verdicts
    return v[(v["rule"] == rule) & (v["group"] == group)].iloc[0]


# --- the rule itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("findings", "status"),
    [
        ([("race=A", "pass", True), ("race=B", "insufficient_evidence", False)], evidence.PASS),
        ([("race=A", "pass", True), ("race=B", "fail", False)], evidence.FAIL),
        ([("race=A", "fail", True), ("race=B", "insufficient_evidence", True)], evidence.FAIL),
        ([("race=A", "insufficient_evidence", True), ("race=B", "pass", False)], evidence.INSUFFICIENT),
        ([("race=A", "insufficient_evidence", False), ("race=B", "insufficient_evidence", False)], evidence.INSUFFICIENT),
        ([], evidence.INSUFFICIENT),
    ],
)
def test_rule_status_fails_on_a_failure_and_passes_only_on_evidence(findings, status):
    judged = fairness.rule_evidence(findings)
    assert judged.status == status and judged.passed is (status == evidence.PASS)
    if status == evidence.INSUFFICIENT and findings and any(r for _, v, r in findings if v != "pass"):
        assert "race=A" in judged.reason
    if status == evidence.INSUFFICIENT and not any(r for *_, r in findings):
        assert "no group could be assessed" in judged.reason


def test_pass_fail_and_insufficient_at_the_audit_level():
    policy = _policy()
    sizes = {"Caucasian": 6000, "AfricanAmerican": 3000}
    passing = _audit(_frame(sizes), policy).outcome("recall_gap")
    assert (passing.status, passing.passed) == (evidence.PASS, True)
    failing = _audit(_frame(sizes, penalty={"AfricanAmerican": 0.3}), policy).outcome("recall_gap")
    assert (failing.status, failing.passed) == (evidence.FAIL, False)
    assert [e["group"] for e in failing.evidence()] == ["AfricanAmerican"]
    # a gap near the bound: its interval straddles it, and the group is required
    straddling = _audit(_frame({"Caucasian": 3000, "AfricanAmerican": 400}, penalty={"AfricanAmerican": 0.12}),
                        policy).outcome("recall_gap")
    row = straddling.insufficient_required.iloc[0]
    assert straddling.status == evidence.INSUFFICIENT and not straddling.passed
    assert row["group"] == "AfricanAmerican" and "straddles" in row["reason"]


def test_all_groups_insufficient_blocks_even_when_none_is_required():
    policy = _policy(lambda fp: fp["sensitive_attributes"]["race"].pop("required_groups"))
    small = _audit(_frame({"Caucasian": 3000, "Hispanic": 60, "Asian": 40}), policy)
    outcome = small.outcome("recall_gap")
    assert outcome.insufficient_required.empty and len(outcome.not_assessable) == 2
    assert outcome.status == evidence.INSUFFICIENT and not outcome.passed
    assert outcome.reason.startswith("no group could be assessed")
    assert small.blocking_status == evidence.INSUFFICIENT


def test_a_required_group_without_evidence_blocks_a_small_other_group_is_only_listed():
    policy = _policy()
    few_aa = _audit(_frame({"Caucasian": 5000, "AfricanAmerican": 60, "Hispanic": 3000, "Asian": 30}), policy)
    outcome = few_aa.outcome("recall_gap")
    assert outcome.status == evidence.INSUFFICIENT
    assert list(outcome.insufficient_required["group"]) == ["AfricanAmerican"]
    assert "race=AfricanAmerican" in outcome.reason
    assert list(outcome.not_assessable["group"]) == ["Asian"]
    # with enough AfricanAmerican patients, the small Asian group is listed but does not block
    many_aa = _audit(_frame({"Caucasian": 5000, "AfricanAmerican": 3000, "Asian": 30}), policy).outcome("recall_gap")
    assert many_aa.status == evidence.PASS and many_aa.insufficient_required.empty
    assert [g["group"] for g in many_aa.not_assessable_evidence()] == ["Asian"]
    assert many_aa.not_assessable_evidence()[0]["n"] == 30


def test_required_population_share_makes_large_groups_required_never_the_reference():
    policy = _policy(lambda fp: fp.update(required_population_share=0.05))
    result = _audit(_frame({"Caucasian": 5000, "AfricanAmerican": 3000, "Hispanic": 600, "Asian": 100}), policy)
    required = set(result.required_groups()["group"])
    assert required == {"AfricanAmerican", "Hispanic"}  # Hispanic ≈ 6.9 %, Asian ≈ 1.1 %; Caucasian is the reference
    assert not _row(result, "Asian")["required"] and _row(result, "Hispanic")["required"]
    assert policy.fairness.required_groups("race", {"Caucasian": 0.9, "Asian": 0.01}) == {"AfricanAmerican"}


def test_missing_reference_makes_every_group_insufficient_with_the_reason():
    policy = _policy(lambda fp: fp["metrics"].update(calibration_gap={"max_difference": 0.05, "severity": "warn"}))
    result = _audit(_frame({"AfricanAmerican": 3000, "Hispanic": 2000}), policy)
    v = result.verdicts
    assert set(v["rule"]) == {"recall_gap", "calibration_gap"} and len(v) == 4  # no group is skipped silently
    assert set(v["verdict"]) == {"insufficient_evidence"}
    assert set(v["reason"]) == {"reference group Caucasian absent from the data"}
    for rule in ("recall_gap", "calibration_gap"):
        outcome = result.outcome(rule)
        assert outcome.status == evidence.INSUFFICIENT
        assert list(outcome.insufficient_required["group"]) == ["AfricanAmerican"]
        assert list(outcome.not_assessable["group"]) == ["Hispanic"]


def test_a_required_group_absent_from_the_data_is_insufficient_not_skipped():
    result = _audit(_frame({"Caucasian": 3000, "Hispanic": 2000}), _policy())
    outcome = result.outcome("recall_gap")
    assert outcome.status == evidence.INSUFFICIENT
    row = outcome.insufficient_required.iloc[0]
    assert (row["group"], row["n"], row["reason"]) == ("AfricanAmerican", 0, "required group absent from the data")
    no_column = _audit(_frame({"Caucasian": 3000}).rename(columns={"race": "ethnicity"}).assign(race="Caucasian"),
                       _policy(lambda fp: fp["sensitive_attributes"].update(
                           gender={"reference": "Female", "required_groups": ["Male"]})))
    male = no_column.outcome("recall_gap").insufficient_required
    assert "attribute gender absent from the data" in set(male["reason"])


# --- the minimum detectable gap -------------------------------------------------------------


def test_min_detectable_gap_shrinks_as_n_grows_and_matches_statsmodels():
    from statsmodels.stats.power import NormalIndPower

    gaps = [fairness.min_detectable_gap(n, 4 * n, 0.5, alpha=0.05) for n in (25, 100, 400, 1600)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 0.05
    p_ref, n1, n2 = 0.6, 120, 500
    gap = fairness.min_detectable_gap(n1, n2, p_ref, alpha=0.05)
    h = 2 * np.arcsin(np.sqrt(p_ref)) - 2 * np.arcsin(np.sqrt(p_ref - gap))
    power = NormalIndPower().power(effect_size=h, nobs1=n1, alpha=0.05, ratio=n2 / n1, alternative="two-sided")
    assert power == pytest.approx(0.80, abs=0.002)
    assert fairness.min_detectable_gap(60, 500, 0.6, alpha=0.01) > fairness.min_detectable_gap(60, 500, 0.6, alpha=0.05)
    assert fairness.min_detectable_gap(0, 500, 0.6, alpha=0.05) is None
    assert fairness.min_detectable_gap(2, 5, 0.1, alpha=0.05) is None  # no drop below 0.1 is detectable


def test_required_groups_carry_their_min_detectable_gap_in_audit_report_and_metadata():
    policy = _policy()
    small = _audit(_frame({"Caucasian": 4000, "AfricanAmerican": 300, "Asian": 30}), policy)
    large = _audit(_frame({"Caucasian": 4000, "AfricanAmerican": 3000, "Asian": 30}), policy)
    gap_small, gap_large = (float(r.required_groups()["min_detectable_gap"].item()) for r in (small, large))
    assert 0 < gap_large < gap_small < 1
    assert np.isnan(_row(small, "Asian")["min_detectable_gap"])  # computed for required groups only
    page = fairness_report.render_audit_html(small, title="t", model="m v1", policy=policy)
    assert "Required groups and minimum detectable gaps" in page and f"{gap_small:.3f}" in page
    assert "not assessable" in page and "race=Asian" in page
    markdown = fairness_report.required_groups_markdown(small)
    assert "AfricanAmerican" in markdown and f"{gap_small:.3f}" in markdown
    assert "race=Asian" in fairness_report.summary_markdown(small)


def test_report_shows_the_three_states():
    """Only positives among AfricanAmerican patients, who are under-alerted: the recall gap fails,
    the FPR gap is undefined for the (required) group, the precision gap is inside a loose bound."""
    policy = _policy(lambda fp: fp["metrics"].update(fpr_gap={"max_difference": 0.10, "severity": "warn"},
                                                      precision_gap={"max_difference": 0.5, "severity": "warn"}))
    frame = _frame({"Caucasian": 6000, "AfricanAmerican": 2000}, penalty={"AfricanAmerican": 0.3})
    frame = frame[(frame["race"] != "AfricanAmerican") | (frame["label"] == 1)]
    result = _audit(frame, policy)
    statuses = {o.rule.name: o.status for o in result.outcomes()}
    assert statuses == {"recall_gap": evidence.FAIL, "fpr_gap": evidence.INSUFFICIENT, "precision_gap": evidence.PASS}
    page = fairness_report.render_audit_html(result, title="t", model="m v1", policy=policy)
    for status in evidence.STATUSES:
        assert f'<tr class="{status}">' in page
    assert "INSUFFICIENT EVIDENCE (not a pass)" in page and "required group(s) without sufficient evidence" in page
    markdown = fairness_report.summary_markdown(result)
    assert all(word in markdown for word in ("**FAIL**", "**PASS**", "**INSUFFICIENT EVIDENCE (not a pass)**"))


# --- stored, and read back as the gate --------------------------------------------------------


def test_gate_read_back_uses_the_same_rule_and_lists_not_assessable(tmp_path):
    policy = _policy()
    con = warehouse.connect(tmp_path / "w.duckdb")
    try:
        listed = _audit(_frame({"Caucasian": 5000, "AfricanAmerican": 3000, "Asian": 30}), policy)
        fairness.store_audit(con, listed, cohort="c", model_name="c_candidate", model_version="1",
                             model_role="candidate")
        gate = fairness.rule_statuses(con, "c_candidate", "1")
        recall = gate.rule("recall_gap")
        assert gate.policy_sha256 == policy.sha256 and gate.policy_version == policy.version
        assert recall.status == listed.outcome("recall_gap").status == evidence.PASS
        assert [f.group for f in recall.not_assessable] == ["Asian"] and not recall.insufficient_required
        assert [f.group for f in gate.not_assessable] == ["Asian"]
        stored = con.execute("SELECT status FROM monitoring.fairness_rule_outcomes").fetchall()
        assert stored == [(evidence.PASS,)]

        few = _audit(_frame({"Caucasian": 5000, "AfricanAmerican": 60}), policy)
        fairness.store_audit(con, few, cohort="c", model_name="c_candidate", model_version="2", model_role="candidate")
        recall = fairness.rule_statuses(con, "c_candidate", "2").rule("recall_gap")
        (aa,) = recall.insufficient_required
        assert recall.status == evidence.INSUFFICIENT and aa.group == "AfricanAmerican" and aa.required
        assert aa.n_positive is not None and aa.min_detectable_gap is not None and aa.min_detectable_gap > 0
        assert aa.as_dict()["min_detectable_gap"] == aa.min_detectable_gap

        # rows stored before the `required` column existed count as required: fail closed
        con.execute("UPDATE monitoring.fairness_verdicts SET required = NULL WHERE model_version = '1'")
        legacy = fairness.rule_statuses(con, "c_candidate", "1").rule("recall_gap")
        assert legacy.status == evidence.INSUFFICIENT and [f.group for f in legacy.insufficient_required] == ["Asian"]

        summary = fairness.summary_for(con, "c")
        rule = summary["candidate"]["rules"][0]
        assert (rule["rule"], rule["status"], rule["blocking"]) == ("recall_gap", evidence.INSUFFICIENT, True)
        assert rule["insufficient_required"][0]["group"] == "AfricanAmerican"
        assert rule["insufficient_required"][0]["min_detectable_gap"] == pytest.approx(aa.min_detectable_gap, abs=1e-4)
        assert summary["candidate"]["blocking_status"] == evidence.INSUFFICIENT
    finally:
        con.close()


def test_ensure_tables_adds_the_new_columns_to_an_older_warehouse(tmp_path):
    con = warehouse.connect(tmp_path / "w.duckdb")
    try:
        old = [s for s in fairness.FAIRNESS_DDL if "ADD COLUMN" not in s and "fairness_rule_outcomes" not in s]
        for statement in old:
            con.execute(statement)
        fairness.ensure_tables(con)
        cols = set(warehouse.columns(con, "monitoring.fairness_verdicts"))
        assert {"required", "n_positive", "reference_n_positive", "min_detectable_gap"} <= cols
        assert warehouse.table_exists(con, "monitoring.fairness_rule_outcomes")
    finally:
        con.close()


def test_shipped_policy_requires_the_groups_the_demo_can_assess():
    from clinical_mlops.features.cohort import load_cohort

    # the required groups are the source's (sources/diabetes130.yaml), applied to the policy per cohort
    fp = for_cohort(parse_policy(SHIPPED_POLICY_PATH.read_bytes()), load_cohort(READMISSION)).fairness
    assert fp.attribute("race").required_groups == ("AfricanAmerican",)
    assert fp.attribute("gender").required_groups == ()  # Male cannot show compliance at the demo's size
    assert fp.not_assessable_acknowledged_by == "governance_board"
    assert fp.required_population_share is None  # only the listed groups, at the demo's size
    demo_race = {"Caucasian": 0.75, "AfricanAmerican": 0.19, "Hispanic": 0.02, "Other": 0.015, "Asian": 0.006}
    assert fp.required_groups("race", demo_race) == {"AfricanAmerican"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda fp: fp["sensitive_attributes"]["race"].update(required_groups=["Caucasian"]),
         "fairness.sensitive_attributes.race.required_groups must not name the reference group 'Caucasian'"),
        (lambda fp: fp["sensitive_attributes"]["race"].update(required_groups="AfricanAmerican"),
         "fairness.sensitive_attributes.race.required_groups must be a list of strings"),
        (lambda fp: fp["sensitive_attributes"]["race"].update(required_groups=["Asian", "Asian"]),
         "required_groups lists a group twice"),
        (lambda fp: fp.update(required_population_share=1.5),
         "fairness.required_population_share must be a number in (0, 1], got 1.5"),
        (lambda fp: fp.update(required_population_share=0),
         "fairness.required_population_share must be a number in (0, 1], got 0"),
        (lambda fp: fp.update(required_population_share="5%"), "fairness.required_population_share must be a number"),
    ],
)
def test_policy_validates_required_groups_and_population_share(edit, message):
    from clinical_mlops.governance.policy import PolicyError

    raw = declare_source_attributes(copy.deepcopy(yaml.safe_load(SHIPPED_POLICY_PATH.read_text())))
    edit(raw["fairness"])
    with pytest.raises(PolicyError) as error:
        parse_policy(yaml.safe_dump(raw), source="p.yaml")
    assert message in str(error.value)


def test_required_groups_are_optional_and_numbers_read_as_group_names():
    raw = declare_source_attributes(yaml.safe_load(SHIPPED_POLICY_PATH.read_text()))
    fp = raw["fairness"]
    fp.pop("required_population_share", None)
    fp["sensitive_attributes"]["gender"].pop("required_groups", None)
    fp["sensitive_attributes"]["age_band"]["required_groups"] = [1]
    policy = parse_policy(yaml.safe_dump(raw)).fairness
    assert policy.required_population_share is None and policy.attribute("gender").required_groups == ()
    assert policy.attribute("age_band").required_groups == ("1",)

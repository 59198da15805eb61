"""Fairness audit: metrics against plain confusion matrices, verdict rules, significance, storage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from clinical_mlops.fairness import audit as fairness, report as fairness_report
from clinical_mlops.core import multiple_testing, warehouse


def _predictions(n: int, *, aa_penalty: float, seed: int = 0) -> pd.DataFrame:
    """Scores that rank well for everyone; positives of AfricanAmerican patients score lower by ``aa_penalty``."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["Caucasian", "AfricanAmerican", "Hispanic", "Asian"], p=[0.72, 0.22, 0.05, 0.01], size=n)
    gender = rng.choice(["Female", "Male"], size=n)
    age = rng.choice(["[60-70)", "[70-80)", "[80-90)"], size=n)
    y = (rng.random(n) < 0.12).astype(int)
    score = np.clip(rng.normal(0.1 + 0.2 * y, 0.08), 0.001, 0.999)
    score[(race == "AfricanAmerican") & (y == 1)] -= aa_penalty
    return pd.DataFrame({"label": y, "score": np.clip(score, 0.001, 0.999), "race": race, "gender": gender,
                         "age_band": age})


def test_group_metrics_match_plain_confusion_matrices(policy):
    frame = _predictions(4000, aa_penalty=0.05, seed=3)
    threshold = 0.2
    result = fairness.audit(frame, threshold=threshold, policy=policy, n_bootstrap=0)
    for slice_name, column in (("race", "race"), ("gender", "gender")):
        for group, rows in frame.groupby(column):
            plain = fairness.confusion_rates(rows["label"], rows["score"] >= threshold)
            got = result.groups[(result.groups["slice"] == slice_name) & (result.groups["group"] == group)]
            got = dict(zip(got["metric"], got["estimate"]))
            for metric, key in (("tpr", "tpr"), ("fpr", "fpr"), ("precision", "precision"),
                                ("selection_rate", "selection_rate"), ("prevalence", "prevalence")):
                assert got[metric] == pytest.approx(plain[key], nan_ok=True), (group, metric)
            assert got["auroc"] == pytest.approx(roc_auc_score(rows["label"], rows["score"]))
            assert got["calibration"] == pytest.approx(rows["score"].mean() - rows["label"].mean())
    # disparities are group minus reference, and the intersection groups are the joined values
    aa = fairness.confusion_rates(*(lambda r: (r["label"], r["score"] >= threshold))(frame[frame.race == "AfricanAmerican"]))
    ref = fairness.confusion_rates(*(lambda r: (r["label"], r["score"] >= threshold))(frame[frame.race == "Caucasian"]))
    gap = result.disparity("race", "AfricanAmerican", "recall_gap")
    assert gap["estimate"] == pytest.approx(aa["tpr"] - ref["tpr"])
    eod = result.disparity("race", "AfricanAmerican", "equalized_odds_difference")["estimate"]
    assert eod == pytest.approx(max(abs(aa["tpr"] - ref["tpr"]), abs(aa["fpr"] - ref["fpr"])))
    dpr = result.disparity("race", "AfricanAmerican", "demographic_parity_ratio")["estimate"]
    assert dpr == pytest.approx(aa["selection_rate"] / ref["selection_rate"])
    assert "AfricanAmerican × Female" in set(result.groups["group"])


def test_bootstrap_intervals_bracket_estimates_and_are_reproducible(policy):
    frame = _predictions(3000, aa_penalty=0.1, seed=5)
    a = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=60, seed=1)
    b = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=60, seed=1)
    pd.testing.assert_frame_equal(a.disparities, b.disparities)
    big = a.disparities[(a.disparities["n"] >= 500) & (a.disparities["metric"] == "recall_gap")]
    assert not big.empty
    assert ((big["lower"] <= big["estimate"] + 1e-9) & (big["estimate"] <= big["upper"] + 1e-9)).all()


def test_bias_injected_predictions_fail_the_gate_and_unbiased_pass(policy):
    biased = fairness.audit(_predictions(12000, aa_penalty=0.15), threshold=0.2, policy=policy, n_bootstrap=100)
    fair = fairness.audit(_predictions(12000, aa_penalty=0.0), threshold=0.2, policy=policy, n_bootstrap=100)
    recall_biased, recall_fair = biased.outcome("recall_gap"), fair.outcome("recall_gap")
    assert not recall_biased.passed and biased.blocking_failed
    failing = {(e["slice"], e["group"]) for e in recall_biased.evidence()}
    assert ("race", "AfricanAmerican") in failing
    assert all(e["ci"][1] < -0.10 for e in recall_biased.evidence())  # the whole interval is beyond the bound
    assert recall_fair.passed and not fair.blocking_failed
    verdict = fair.verdicts[(fair.verdicts["rule"] == "recall_gap") & (fair.verdicts["group"] == "AfricanAmerican")
                            & (fair.verdicts["slice"] == "race")]["verdict"].item()
    assert verdict == "pass"
    # the recall-gap test is significant for the biased group only, after correction
    sig = biased.disparities[(biased.disparities["metric"] == "recall_gap") & biased.disparities["significant"]]
    assert "AfricanAmerican" in set(sig["group"]) and "Male" not in set(sig["group"])


def test_small_group_is_insufficient_evidence_never_pass(policy):
    frame = _predictions(6000, aa_penalty=0.0, seed=2)
    result = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=50)
    asian = result.verdicts[(result.verdicts["slice"] == "race") & (result.verdicts["group"] == "Asian")]
    assert (asian["n"] < policy.fairness.min_group_size).all()
    assert set(asian["verdict"]) == {"insufficient_evidence"}
    assert asian["reason"].str.contains("min_group_size").all()
    small = result.verdicts[result.verdicts["n"] < policy.fairness.min_group_size]
    assert not small.empty and (small["verdict"] != "pass").all()


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(-0.30, -0.12, "fail"), (0.11, 0.2, "fail"), (-0.08, 0.05, "pass"), (-0.15, -0.05, "insufficient_evidence")],
)
def test_verdict_needs_the_whole_interval(policy, lo, hi, expected):
    import dataclasses

    rule = dataclasses.replace(policy.fairness.metric("recall_gap"), direction="both")
    verdict, _ = fairness.verdict_for(rule, "recall_gap", (lo + hi) / 2, lo, hi, 500, 500, 100)
    assert verdict == expected


def test_ratio_verdict_uses_the_four_fifths_rule(policy):
    rule = policy.fairness.metric("demographic_parity_ratio")
    assert fairness.verdict_for(rule, rule.name, 0.6, 0.55, 0.7, 500, 500, 100)[0] == "fail"
    assert fairness.verdict_for(rule, rule.name, 1.0, 0.9, 1.1, 500, 500, 100)[0] == "pass"
    assert fairness.verdict_for(rule, rule.name, 1.5, 1.3, 1.7, 500, 500, 100)[0] == "fail"


def test_multiple_comparison_corrections():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    holm = multiple_testing.adjust_p_values(p, "holm")
    assert np.allclose(holm[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(holm[4])
    bh = multiple_testing.adjust_p_values(p, "benjamini_hochberg")
    assert np.allclose(bh[:4], [0.02, 0.04, 0.04, 0.02])
    assert fairness.two_proportion_z_test(50, 100, 50, 100) == pytest.approx(1.0)
    assert fairness.two_proportion_z_test(20, 100, 60, 100) < 1e-6


def test_two_proportion_z_test_is_the_pooled_z_test():
    """statsmodels' proportions_ztest against the textbook formula (the hand-written test it replaced),
    with the fractional counts the audit passes (recall × positives); no variance is a p-value of 1."""
    import math

    from scipy.stats import norm

    rng = np.random.default_rng(3)
    for _ in range(500):
        n1, n2 = (int(n) for n in rng.integers(1, 3_000, 2))
        x1, x2 = float(rng.random() * n1), float(rng.integers(0, n2 + 1))
        pooled = (x1 + x2) / (n1 + n2)
        z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        assert fairness.two_proportion_z_test(x1, n1, x2, n2) == pytest.approx(2 * norm.sf(abs(z)), rel=0, abs=1e-12)
    assert fairness.two_proportion_z_test(0, 10, 0, 20) == 1.0 == fairness.two_proportion_z_test(10, 10, 5, 5)
    assert math.isnan(fairness.two_proportion_z_test(1, 0, 1, 10))


def test_store_and_summary_keep_the_policy_hash(tmp_path, policy):
    con = warehouse.connect(tmp_path / "w.duckdb")
    result = fairness.audit(_predictions(8000, aa_penalty=0.15), threshold=0.2, policy=policy, n_bootstrap=50)
    audit_id = fairness.store_audit(con, result, cohort="c", model_name="c_candidate", model_version="1",
                                    model_role="candidate")
    hashes = con.execute("SELECT DISTINCT policy_sha256 FROM monitoring.fairness_metrics UNION "
                         "SELECT DISTINCT policy_sha256 FROM monitoring.fairness_verdicts").fetchall()
    assert hashes == [(policy.sha256,)]
    stored = fairness.latest_verdicts(con, "c")
    assert (stored["audit_id"] == audit_id).all() and len(stored) == len(result.verdicts)
    summary = fairness.summary_for(con, "c")
    assert summary["candidate"]["blocking_failed"] is True
    assert summary["recall_gap"]["group"] in {"AfricanAmerican", "AfricanAmerican × Female", "AfricanAmerican × Male"}
    assert summary["recall_gap"]["before"]["estimate"] < -0.1 and summary["recall_gap"]["after"] is None
    assert summary["mitigated"] is None
    con.close()


def test_report_page_has_plots_and_suppresses_small_cells(policy):
    frame = _predictions(3000, aa_penalty=0.15)
    frame.loc[:4, "gender"] = "Unknown"  # a cell of five rows
    result = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=30)
    page = fairness_report.render_audit_html(result, title="t", model="m v1", policy=policy)
    assert page.count("data:image/png;base64,") >= 5
    assert "recall_gap" in page and policy.sha256[:16] in page
    assert f"&lt;{fairness_report.SMALL_CELL}" in page


@pytest.mark.parametrize(
    "interval,expected",
    [((-0.30, -0.15), "fail"), ((0.15, 0.30), "pass"), ((-0.05, 0.05), "pass"), ((-0.20, 0.02), "insufficient_evidence")],
)
def test_one_sided_recall_gap_counts_only_a_group_doing_worse(interval, expected):
    from clinical_mlops.fairness.audit import verdict_for
    from clinical_mlops.governance.policy import MetricRule

    rule = MetricRule(name="recall_gap", severity="block_promotion", max_difference=0.10, direction="lower")
    lo, hi = interval
    verdict, _ = verdict_for(rule, "recall_gap", (lo + hi) / 2, lo, hi, n=500, ref_n=500, min_group_size=100)
    assert verdict == expected

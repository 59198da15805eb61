"""``[cohort, production_windows]``'s step: the early warning opens one warn incident per window before the
labels land, and its check follows the evidence rule (a breach fails, nothing to estimate is insufficient)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from clinical_mlops.core import warehouse
from clinical_mlops.core.evidence import FAIL, INSUFFICIENT, PASS
from clinical_mlops.core.steps import StepError
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.governance.policy import load_policy
from clinical_mlops.monitoring import steps
from clinical_mlops.monitoring.production import utc_now
from clinical_mlops_tests.conftest import READMISSION
from clinical_mlops_tests.monitoring.test_estimation import _write, calibrated, shifted


def test_an_early_warning_opens_one_warn_incident_before_the_labels(tmp_path):
    spec, policy = load_cohort(READMISSION), load_policy()  # the step applies the source's attributes itself
    heldout = calibrated(4_000, 41)
    extracts = {"month_001.csv": (calibrated(2_500, 42, start_id=10_000), "1"),
                "month_002.csv": (shifted(2_500, 43, 0.6).assign(encounter_id=np.arange(20_000, 22_500)), "1")}
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        _write(con, spec, heldout, extracts, labelled={"month_001.csv"}, when=datetime(2026, 1, 5))
        step = steps.estimate_windows(con, spec, policy=policy, n_simulations=200)
        again = steps.estimate_windows(con, spec, policy=policy, n_simulations=200)
        incidents = con.execute("SELECT severity, \"check\", status FROM monitoring.incidents").fetchall()
    (warned,) = [r for r in step.outcome.windows if r.early_warning == "warn"]
    assert warned.status == "estimated_only" and warned.window.extract_id == "month_002.csv"
    assert step.evidence().status == FAIL and "AfricanAmerican" in step.evidence().reason
    assert list(step.incidents) == [warned.window.window_id]
    assert again.incidents[warned.window.window_id]["incident_id"] == step.incidents[warned.window.window_id][
        "incident_id"]  # found open, not opened twice
    assert len(incidents) == 1 and incidents[0][0] == "warn" and warned.window.window_id in incidents[0][1]


def test_a_clean_window_passes_and_no_window_is_insufficient(tmp_path):
    spec, policy = load_cohort(READMISSION), load_policy()
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        none = steps.estimate_windows(con, spec, policy=policy, n_simulations=50)
        _write(con, spec, calibrated(4_000, 51), {"month_001.csv": (calibrated(2_500, 52, start_id=10_000), "1")},
               labelled=set(), when=datetime(2026, 1, 5))
        clean = steps.estimate_windows(con, spec, policy=policy, n_simulations=200)
    assert none.evidence().status == INSUFFICIENT and not none.incidents
    assert clean.evidence().status == PASS and not clean.incidents


def test_a_labelled_window_whose_gap_fails_opens_an_incident_at_the_rules_severity(tmp_path):
    spec, policy = load_cohort(READMISSION), load_policy()
    extracts = {"month_001.csv": (shifted(3_000, 63, 0.5).assign(encounter_id=np.arange(30_000, 33_000)), "1")}
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        _write(con, spec, calibrated(4_000, 61), extracts, labelled={"month_001.csv"}, when=datetime(2026, 1, 5))
        step = steps.estimate_windows(con, spec, policy=policy, n_simulations=200)
        again = steps.estimate_windows(con, spec, policy=policy, n_simulations=200)
        severities = con.execute("""SELECT severity FROM monitoring.incidents
                                    WHERE "check" LIKE '%production_windows:recall_gap_within_policy[%'""").fetchall()
    (window,) = step.outcome.windows
    realised = window.realised
    failing = realised[(realised["metric"] == "recall_gap") & (realised["status"] == "fail")]
    assert "AfricanAmerican" in set(failing["group"])
    rule = policy.fairness.metric("recall_gap")
    key = f"{window.window.window_id}:recall_gap"
    assert list(step.realised_incidents) == [key]
    assert step.realised_incidents[key]["severity"] == rule.severity == "block_promotion"
    assert again.realised_incidents[key]["incident_id"] == step.realised_incidents[key]["incident_id"]
    assert severities == [("block_promotion",)]  # once per window and rule


def test_the_policy_sets_the_label_delay_and_the_window_period(tmp_path):
    spec, policy = load_cohort(READMISSION), load_policy()
    assert (policy.monitoring.window_period, policy.monitoring.label_delay_days) == ("week", 30.0)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        _write(con, spec, calibrated(4_000, 71), {"month_001.csv": (calibrated(2_000, 72, start_id=10_000), "1")},
               labelled=set(), when=datetime(2026, 1, 5))
        default = steps.estimate_windows(con, spec, policy=policy, n_simulations=50)
        shorter = steps.estimate_windows(con, spec, policy=policy, n_simulations=50, label_delay_days=2)
    (w,) = default.outcome.windows
    assert w.window.label_delay_days == 30.0 and (w.window.labels_due_at - w.window.end).days == 30
    assert shorter.outcome.windows[0].window.label_delay_days == 2.0
    assert steps.label_delay(policy, None) == 30.0 and steps.label_delay(policy, 0.5) == 0.5


def test_outcomes_are_joined_as_of_a_past_moment_and_never_as_of_the_future(tmp_path):
    spec, policy = load_cohort(READMISSION), load_policy()
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        with pytest.raises(StepError, match="in the future"):
            steps.join_outcomes(con, spec, policy=policy, as_of=utc_now() + timedelta(hours=1))
        with pytest.raises(StepError, match="not an ISO timestamp"):
            steps.join_outcomes(con, spec, policy=policy, as_of="yesterday")


def test_batch_predictions_alone_name_their_prediction_ref(tmp_path):
    from clinical_mlops.monitoring import production

    spec = load_cohort(READMISSION)
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        _write(con, spec, calibrated(500, 81), {"month_001.csv": (calibrated(300, 82, start_id=10_000), "1")},
               labelled=set(), when=datetime(2026, 1, 5))
        sql, params = production.production_predictions_sql(con, spec.name)
        cursor = con.execute(f"SELECT * FROM ({sql}) LIMIT 1", params)
        columns = [d[0] for d in cursor.description]
        refs = con.execute(f"SELECT count(DISTINCT prediction_ref) FROM ({sql})", params).fetchone()[0]
    assert "prediction_ref" in columns and refs == 300

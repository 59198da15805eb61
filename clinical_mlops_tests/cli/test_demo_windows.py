"""The demo's production windows: the clock keeps windows a label delay apart, and the story sets estimated
beside realised per window with the early warning and when the labels landed."""

from __future__ import annotations

import time
from datetime import datetime

import numpy as np

from clinical_mlops.cli import demo_windows
from clinical_mlops.core import warehouse
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.governance.policy import load_policy
from clinical_mlops.monitoring import steps
from clinical_mlops_tests.conftest import READMISSION
from clinical_mlops_tests.monitoring.test_estimation import _write, calibrated, shifted


def test_the_clock_scores_a_window_only_once_the_previous_ones_labels_are_due():
    clock = demo_windows.WindowClock(0.3)
    started = time.time()
    clock.before_scoring()  # nothing scored yet: no wait
    assert time.time() - started < 0.2
    clock.scored()
    clock.before_scoring()
    assert time.time() - clock.last_scored >= 0.3


def test_the_story_sets_estimated_beside_realised_and_times_the_early_warning(tmp_path):
    spec, policy = load_cohort(READMISSION), load_policy()
    extracts = {"w1.csv": (calibrated(2_500, 91, start_id=10_000), "1"),
                "w3.csv": (shifted(2_500, 92, 0.5).assign(encounter_id=np.arange(20_000, 22_500)), "1")}
    with warehouse.connect(tmp_path / "w.duckdb") as con:
        _write(con, spec, calibrated(4_000, 90), extracts, labelled={"w1.csv"}, when=datetime(2026, 1, 5))
        steps.estimate_windows(con, spec, policy=policy, n_simulations=200)
        first = demo_windows.window_statuses(con, [spec.name])
        played = {"status_first_pass": first, "second_pass": {"finished_at": "2099-01-01T00:00:00"}}
        story = {w["window_id"].split(":")[1]: w for w in demo_windows.windows_story(con, spec.name, played)}
    assert first[spec.name] == {w: s for w, s in zip(
        [f"extract:w1.csv:{spec.name}_candidate:v1", f"extract:w3.csv:{spec.name}_candidate:v1"],
        ["labelled", "estimated_only"])}
    clean, biased = story["w1.csv"], story["w3.csv"]
    assert clean["labelled"] and clean["realised_auroc"] is not None and "auroc" in clean["estimation_error"]
    assert abs(clean["estimation_error"]["auroc"]) < 0.05 and clean["early_warning"] is None
    assert not biased["labelled"] and biased["realised_auroc"] is None  # estimated only, never a realised pass
    assert biased["widest_estimated_gap"]["status"] == "warn" and "AfricanAmerican" in biased["widest_estimated_gap"]["group"]
    assert biased["early_warning"]["incident_id"].startswith("INC-")
    assert biased["early_warning"]["labels_landed_at"] == "2099-01-01T00:00:00"

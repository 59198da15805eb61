"""Cell-count bootstrap: agrees with the row-level computations it replaces above a size cap.

Tolerances (seeded, so each run is deterministic):
* point estimates: identical to the row-level audit (1e-9), AUROC included (computed on rows);
* ranking metrics from cells with one key per distinct score: exact (1e-12); with 1,000 bins
  on continuous scores: within 1e-3 of the exact AUROC / average precision;
* bootstrap interval end points, for groups of at least 500 rows, as a share of the row-level
  interval's width: median under 0.15, none over 0.5. Two row-level bootstraps of 300 replicates
  with different seeds differ by a median 0.07 and at most 0.19 of the width on the same data
  (Monte Carlo error); cells against rows: median 0.07, at most 0.35 (equalized odds near 0,
  a folded statistic).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from clinical_mlops.core import binned_bootstrap as binned
from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.fairness import audit as fairness
from clinical_mlops.governance.policy import load_policy


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def _predictions(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    race = rng.choice(["Caucasian", "AfricanAmerican", "Hispanic", "Asian"], p=[0.7, 0.22, 0.06, 0.02], size=n)
    gender = rng.choice(["Female", "Male"], size=n)
    age = rng.choice(["[60-70)", "[70-80)", "[80-90)"], size=n)
    y = (rng.random(n) < 0.12).astype(int)
    score = np.clip(rng.normal(0.1 + 0.15 * y - 0.05 * y * (race == "AfricanAmerican"), 0.08), 0.001, 0.999)
    return pd.DataFrame({"label": y, "score": score, "race": race, "gender": gender, "age_band": age})


def test_ranking_metrics_from_cells_are_exact_with_one_key_per_score() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.2).astype(float)
    s = np.round(rng.random(3000) * 0.5 + 0.3 * y, 3)  # many ties
    keys = binned.score_keys(s, 0.4, n_bins=s.shape[0])
    table = binned.cells(keys, y, s, np.zeros(s.shape[0], dtype=np.int64), 1)
    assert binned.auroc(table.count)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert binned.average_precision(table.count)[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ranking_metrics_from_1000_bins_are_within_a_thousandth() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(50_000) < 0.12).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=50_000) + 1.2 * y - 2)))
    keys = binned.score_keys(s, float(np.quantile(s, 0.8)))
    assert keys.size <= 1000 + binned.ECE_BINS + 1
    table = binned.cells(keys, y, s, np.zeros(s.shape[0], dtype=np.int64), 1)
    assert abs(binned.auroc(table.count)[0] - roc_auc_score(y, s)) < 1e-3
    assert abs(binned.average_precision(table.count)[0] - average_precision_score(y, s)) < 1e-3
    # every key lies on one side of the threshold and in one calibration bin
    for k in range(keys.size):
        in_key = s[keys.key == k]
        assert ((in_key >= float(np.quantile(s, 0.8))) == keys.flagged[k]).all()


def test_replicates_are_multinomial_draws_of_all_rows() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(float)
    s = rng.random(2000)
    codes = rng.integers(0, 3, size=2000)
    keys = binned.score_keys(s, 0.5, n_bins=50)
    table = binned.cells(keys, y, s, codes, 3)
    blocks = list(binned.replicate_blocks(table, 400, np.random.default_rng(4)))
    reps = np.concatenate(blocks)
    assert reps.shape == (400, *table.count.shape)
    assert (reps.sum(axis=(1, 2, 3)) == 2000).all()
    assert (reps[:, table.count == 0] == 0).all()
    assert np.abs(reps.mean(axis=0) - table.count).max() < 4 * np.sqrt(table.count.max())


def test_binned_audit_has_the_exact_point_estimates(policy) -> None:
    frame = _predictions(20_000, seed=5)
    rows = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=0)
    cells = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=0, exact_max_rows=0)
    assert rows.bootstrap_method == "rows" and cells.bootstrap_method == "binned"
    assert cells.score_bins == binned.DEFAULT_BINS and cells.exact_max_rows == 0
    pd.testing.assert_frame_equal(rows.groups[["slice", "group", "n", "n_positive", "metric"]],
                                  cells.groups[["slice", "group", "n", "n_positive", "metric"]])
    np.testing.assert_allclose(cells.groups["estimate"], rows.groups["estimate"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(cells.disparities["estimate"], rows.disparities["estimate"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(cells.disparities["p_value"], rows.disparities["p_value"], rtol=0, atol=1e-12)


def test_binned_audit_intervals_agree_with_the_row_bootstrap(policy) -> None:
    frame = _predictions(20_000, seed=6)
    rows = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=300, seed=1)
    cells = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=300, seed=1, exact_max_rows=0)
    for table in ("groups", "disparities"):
        a, b = getattr(rows, table), getattr(cells, table)
        keep = (a["n"] >= 500).to_numpy() & a["lower"].notna().to_numpy() & (a["upper"] > a["lower"]).to_numpy()
        width = (a["upper"] - a["lower"]).to_numpy()[keep]
        share = np.maximum(np.abs(a["lower"].to_numpy()[keep] - b["lower"].to_numpy()[keep]),
                           np.abs(a["upper"].to_numpy()[keep] - b["upper"].to_numpy()[keep])) / width
        assert np.median(share) < 0.15, (table, float(np.median(share)))
        assert share.max() < 0.5, (table, float(share.max()))
    assert (rows.verdicts["verdict"] == cells.verdicts["verdict"]).mean() >= 0.9


def test_audit_model_reads_numbers_and_matches_the_frame_audit(policy) -> None:
    frame = _predictions(3000, seed=7)
    frame.loc[::97, "race"] = None  # a missing group
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ml")
    con.register("frame", frame.assign(encounter_id=np.arange(len(frame)) * 3 + 1))
    con.execute("""CREATE TABLE ml.predictions AS SELECT encounter_id, 'm' AS model_name, '1' AS model_version,
                   'test' AS split, label, score FROM frame""")
    con.execute("CREATE TABLE feats AS SELECT encounter_id, race, gender, age_band FROM frame")
    model = {"model_name": "m", "model_version": "1", "operating_threshold": 0.2, "role": "candidate"}
    expected = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=40, seed=policy.fairness.bootstrap_seed)
    got, _ = fairness.audit_model(con, cohort="c", features_table="feats", model=model, policy=policy,
                                  n_bootstrap=40, store=False)
    pd.testing.assert_frame_equal(got.groups, expected.groups)
    pd.testing.assert_frame_equal(got.verdicts, expected.verdicts)
    assert "missing" in set(got.groups["group"])
    binned_result, _ = fairness.audit_model(con, cohort="c", features_table="feats", model=model, policy=policy,
                                            n_bootstrap=40, store=False, exact_max_rows=1000)
    assert binned_result.bootstrap_method == "binned" and binned_result.exact_max_rows == 1000


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.3 * y - 2)))
    groups = {"race": rng.choice(["A", "B", "C"], p=[0.7, 0.25, 0.05], size=n),
              "age": rng.choice(["[60-70)", "[70-80)"], size=n)}
    return y, s, groups


def test_binned_evaluation_has_exact_points_and_equivalent_intervals() -> None:
    y, s, groups = _scores(20_000, seed=8)
    rows = evaluation.metrics_by_group(y, s, groups, threshold=0.3, n_boot=300, seed=2, min_group_size=100)
    cells = evaluation.metrics_by_group(y, s, groups, threshold=0.3, n_boot=300, seed=2, min_group_size=100,
                                        exact_max_rows=0)
    pd.testing.assert_frame_equal(rows.drop(columns=["lower", "upper"]), cells.drop(columns=["lower", "upper"]))
    keep = (rows["n"] >= 500).to_numpy() & rows["lower"].notna().to_numpy() & (rows["upper"] > rows["lower"]).to_numpy()
    width = (rows["upper"] - rows["lower"]).to_numpy()[keep]
    share = np.maximum(np.abs(rows["lower"].to_numpy()[keep] - cells["lower"].to_numpy()[keep]),
                       np.abs(rows["upper"].to_numpy()[keep] - cells["upper"].to_numpy()[keep])) / width
    assert np.median(share) < 0.15, float(np.median(share))
    assert share.max() < 0.5, float(share.max())
    overall = evaluation.bootstrap_metrics(y, s, threshold=0.3, n_boot=300, seed=2, exact_max_rows=0)
    first = cells[cells["attribute"] == "overall"].set_index("metric")
    for metric, estimate in overall.items():
        assert estimate.lower == pytest.approx(first.loc[metric, "lower"], nan_ok=True)


def test_evaluation_records_how_the_intervals_were_computed(tmp_path) -> None:
    from clinical_mlops.evaluation import models as model_evaluation
    from clinical_mlops.core import warehouse
    from clinical_mlops.features.cohort import load_cohort

    spec = load_cohort("readmission_30d")
    y, s, _ = _scores(4000, seed=9)
    frame = _predictions(4000, seed=9).assign(label=y.astype(int), score=s, encounter_id=np.arange(4000) * 2 + 5)
    frame.loc[::101, "gender"] = None
    con = warehouse.connect(tmp_path / "w.duckdb")
    con.register("frame", frame)
    con.execute(f"CREATE TABLE {spec.features_table} AS SELECT encounter_id, race, gender, age_band FROM frame")
    con.execute("""INSERT INTO ml.predictions BY NAME SELECT 'readmission_30d' AS cohort, encounter_id,
                   'm' AS model_name, '1' AS model_version, 'r' AS mlflow_run_id, 'test' AS split, label, score,
                   TIMESTAMP '2026-01-01' AS predicted_at FROM frame""")
    kwargs = dict(model_name="m", model_version="1", threshold=0.3, n_boot=50, seed=3, min_group_size=100)
    exact = model_evaluation.evaluate_model(con, spec, plots=False, **kwargs)
    cells = model_evaluation.evaluate_model(con, spec, plots=False, exact_max_rows=1000, **kwargs)
    assert exact.bootstrap["method"] == "rows" and exact.bootstrap["score_bins"] is None
    assert cells.bootstrap == {"method": "binned", "rows": 4000, "replicates": 50, "exact_max_rows": 1000,
                               "score_bins": binned.DEFAULT_BINS}
    pd.testing.assert_frame_equal(exact.table.drop(columns=["lower", "upper"]),
                                  cells.table.drop(columns=["lower", "upper"]))
    # the same table as from the frame of rows, in encounter order
    groups = {a: frame[a].to_numpy(dtype=object) for a in spec.sensitive_attributes}
    direct = evaluation.metrics_by_group(frame["label"].to_numpy(), frame["score"].to_numpy(), groups, threshold=0.3,
                                         n_boot=50, seed=3, min_group_size=100)
    pd.testing.assert_frame_equal(exact.table, direct)
    assert "missing" in set(exact.table["group"])

"""The one bootstrap kernel: evaluation, fairness and change control go through it; cells agree with rows.

Tolerances (seeded, so each run is deterministic):
* the three callers against the kernel called directly: identical intervals (same draws, same
  arithmetic; count weights make AUROC and the rates exact rationals);
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

from clinical_mlops.core import bootstrap
from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.fairness import audit as fairness
from clinical_mlops.registry import change_control


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
    keys = bootstrap.score_keys(s, 0.4, n_bins=s.shape[0])
    table = bootstrap.cells(keys, y, s, np.zeros(s.shape[0], dtype=np.int64), 1)
    assert bootstrap.auroc(table.count)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert bootstrap.average_precision(table.count)[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ranking_metrics_from_1000_bins_are_within_a_thousandth() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(50_000) < 0.12).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=50_000) + 1.2 * y - 2)))
    keys = bootstrap.score_keys(s, float(np.quantile(s, 0.8)))
    assert keys.size <= 1000 + bootstrap.ECE_BINS + 1
    table = bootstrap.cells(keys, y, s, np.zeros(s.shape[0], dtype=np.int64), 1)
    assert abs(bootstrap.auroc(table.count)[0] - roc_auc_score(y, s)) < 1e-3
    assert abs(bootstrap.average_precision(table.count)[0] - average_precision_score(y, s)) < 1e-3
    # every key lies on one side of the threshold and in one calibration bin
    for k in range(keys.size):
        in_key = s[keys.key == k]
        assert ((in_key >= float(np.quantile(s, 0.8))) == keys.flagged[k]).all()


def test_replicates_are_multinomial_draws_of_all_rows() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(float)
    s = rng.random(2000)
    codes = rng.integers(0, 3, size=2000)
    keys = bootstrap.score_keys(s, 0.5, n_bins=50)
    table = bootstrap.cells(keys, y, s, codes, 3)
    blocks = list(bootstrap.replicate_blocks(table, 400, np.random.default_rng(4)))
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
    assert cells.score_bins == bootstrap.DEFAULT_BINS and cells.exact_max_rows == 0
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

    spec = load_cohort("synthetic_diabetes130_readmission_30d")
    y, s, _ = _scores(4000, seed=9)
    frame = _predictions(4000, seed=9).assign(label=y.astype(int), score=s, encounter_id=np.arange(4000) * 2 + 5)
    frame.loc[::101, "gender"] = None
    con = warehouse.connect(tmp_path / "w.duckdb")
    con.register("frame", frame)
    con.execute(f"CREATE TABLE {spec.features_table} AS SELECT encounter_id, race, gender, age_band FROM frame")
    con.execute("""INSERT INTO ml.predictions BY NAME SELECT 'synthetic_diabetes130_readmission_30d' AS cohort, encounter_id,
                   'm' AS model_name, '1' AS model_version, 'r' AS mlflow_run_id, 'test' AS split, label, score,
                   TIMESTAMP '2026-01-01' AS predicted_at FROM frame""")
    kwargs = dict(model_name="m", model_version="1", threshold=0.3, n_boot=50, seed=3, min_group_size=100)
    exact = model_evaluation.evaluate_model(con, spec, plots=False, **kwargs)
    cells = model_evaluation.evaluate_model(con, spec, plots=False, exact_max_rows=1000, **kwargs)
    assert exact.bootstrap["method"] == "rows" and exact.bootstrap["score_bins"] is None
    assert cells.bootstrap == {"method": "binned", "rows": 4000, "replicates": 50, "exact_max_rows": 1000,
                               "score_bins": bootstrap.DEFAULT_BINS}
    pd.testing.assert_frame_equal(exact.table.drop(columns=["lower", "upper"]),
                                  cells.table.drop(columns=["lower", "upper"]))
    # the same table as from the frame of rows, in encounter order
    groups = {a: frame[a].to_numpy(dtype=object) for a in spec.sensitive_attributes}
    direct = evaluation.metrics_by_group(frame["label"].to_numpy(), frame["score"].to_numpy(), groups, threshold=0.3,
                                         n_boot=50, seed=3, min_group_size=100)
    pd.testing.assert_frame_equal(exact.table, direct)
    assert "missing" in set(exact.table["group"])


# ---------------------------------------------------------------------------------------------
# one kernel behind evaluation, fairness and change control
# ---------------------------------------------------------------------------------------------


def _kernel_interval(y: np.ndarray, s: np.ndarray, threshold: float, rows: np.ndarray | None, *, n_boot: int,
                     seed: int, confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """Intervals of every kernel metric for one subset, straight from the kernel."""
    (reps,) = bootstrap.row_replicates(y.shape[0], [bootstrap.subset(y, s, threshold, rows)], n_boot=n_boot,
                                       seed=seed)
    lo, hi = bootstrap.percentile_interval(reps, confidence)
    return {m: (float(lo[k]), float(hi[k])) for k, m in enumerate(bootstrap.METRICS)}


def test_evaluation_fairness_and_change_control_give_the_kernels_intervals(policy) -> None:
    """Same rows, metric and seed: the three callers' intervals equal the kernel's, to the last bit."""
    frame = _predictions(3000, seed=11).sort_values("score", ascending=False, kind="stable")
    frame = frame.assign(gender="Female").reset_index(drop=True)  # one group holding every row
    y, s = frame["label"].to_numpy(dtype=float), frame["score"].to_numpy()
    threshold, n_boot, seed = 0.2, 80, 7
    kernel = _kernel_interval(y, s, threshold, None, n_boot=n_boot, seed=seed)

    evaluated = evaluation.bootstrap_metrics(y, s, threshold=threshold, n_boot=n_boot, seed=seed,
                                             weights_dtype=np.float64)
    audited = fairness.audit(frame[["label", "score", "gender"]], threshold=threshold, policy=policy,
                             n_bootstrap=n_boot, seed=seed).groups.set_index("metric")
    paired = change_control.paired_bootstrap(y, [s], [threshold], n_boot=n_boot, seed=seed,
                                             min_group_size=1).table.set_index("metric")
    for metric in ("auroc", "tpr", "fpr", "selection_rate", "precision", "auprc", "brier"):
        assert (evaluated[metric].lower, evaluated[metric].upper) == kernel[metric], metric
    for metric in ("auroc", "tpr", "fpr", "selection_rate", "precision", "prevalence"):
        assert tuple(audited.loc[metric, ["lower", "upper"]]) == kernel[metric], metric
    for metric, name in (("auroc", "auroc"), ("recall", "tpr"), ("fpr", "fpr"), ("alert_rate", "selection_rate"),
                         ("auprc", "auprc"), ("brier", "brier")):
        assert tuple(paired.loc[metric, ["challenger_lower", "challenger_upper"]]) == kernel[name], metric


def test_group_and_paired_intervals_are_kernel_replicates_of_the_same_draws(policy) -> None:
    """A fairness group, a fairness gap and a change-control delta are functions of one set of draws."""
    frame = _predictions(4000, seed=12)
    y, s = frame["label"].to_numpy(dtype=float), frame["score"].to_numpy()
    n_boot, seed = 60, 3
    result = fairness.audit(frame, threshold=0.2, policy=policy, n_bootstrap=n_boot, seed=seed)
    rows = {g: np.flatnonzero(frame["race"].to_numpy() == g) for g in ("AfricanAmerican", "Caucasian")}
    subsets = [bootstrap.subset(y, s, 0.2, r) for r in rows.values()]
    group, reference = bootstrap.row_replicates(y.shape[0], subsets, n_boot=n_boot, seed=seed)
    tpr = bootstrap.METRICS.index("tpr")
    got = result.groups[(result.groups["slice"] == "race") & (result.groups["group"] == "AfricanAmerican")
                        & (result.groups["metric"] == "tpr")].iloc[0]
    lo, hi = bootstrap.percentile_interval(group, policy.fairness.confidence)
    assert (got["lower"], got["upper"]) == (lo[tpr], hi[tpr])
    gap = result.disparity("race", "AfricanAmerican", "recall_gap")
    lo, hi = bootstrap.percentile_interval(group[:, tpr] - reference[:, tpr], policy.fairness.confidence)
    assert (gap["lower"], gap["upper"]) == (float(lo), float(hi))

    other = np.clip(s + np.random.default_rng(0).normal(0, 0.05, s.shape[0]), 0, 1)
    table = change_control.paired_bootstrap(y, [other, s], [0.2, 0.2], n_boot=n_boot, seed=seed).table
    champion, challenger = bootstrap.row_replicates(
        y.shape[0], [bootstrap.subset(y, other, 0.2), bootstrap.subset(y, s, 0.2)], n_boot=n_boot, seed=seed)
    auroc = bootstrap.METRICS.index("auroc")
    lo, hi = bootstrap.percentile_interval(challenger[:, auroc] - champion[:, auroc], 0.95)
    row = table[(table["attribute"] == "overall") & (table["metric"] == "auroc")].iloc[0]
    assert (row["lower"], row["upper"]) == (float(lo), float(hi))


def test_cells_with_one_key_per_score_reproduce_row_weighted_metrics() -> None:
    """Exact against binned on the same resample: a row-count replicate summed into cells gives the same metrics."""
    rng = np.random.default_rng(13)
    y = (rng.random(2500) < 0.25).astype(float)
    s = np.round(rng.random(2500) * 0.6 + 0.3 * y, 3)  # ties
    codes = rng.integers(0, 3, size=2500)
    keys = bootstrap.score_keys(s, 0.45, n_bins=s.shape[0])  # one key per distinct score
    table = bootstrap.cells(keys, y, s, codes, 3)
    weights = np.stack([np.bincount(rng.integers(0, 2500, size=2500), minlength=2500) for _ in range(4)])
    flat = (codes * keys.size + keys.key) * 2 + y.astype(np.int64)
    counts = np.stack([np.bincount(flat, weights=w, minlength=table.count.size) for w in weights])
    from_cells = bootstrap.cell_metrics(counts.reshape(4, *table.count.shape), table.mean(table.score_sum),
                                        table.mean(table.squared_error_sum), keys)
    for g in range(3):
        from_rows = bootstrap.weighted_metrics(weights, bootstrap.subset(y, s, 0.45, np.flatnonzero(codes == g)))
        np.testing.assert_allclose(from_cells[:, g], from_rows, rtol=0, atol=1e-12)


def test_group_bootstrap_rows_and_cells_share_estimates_and_agree_on_intervals() -> None:
    y, s, groups = _scores(20_000, seed=14)
    codes = {a: np.unique(v, return_inverse=True)[1] for a, v in groups.items()}
    partitions = [(np.zeros(y.shape[0], dtype=np.int64), 1)] + [(c, int(c.max()) + 1) for c in codes.values()]
    kwargs = dict(threshold=0.3, n_boot=300, seed=4, min_group_size=1500)
    rows = bootstrap.group_bootstrap(y, s, partitions, exact_max_rows=y.shape[0], **kwargs)
    cells = bootstrap.group_bootstrap(y, s, partitions, exact_max_rows=0, **kwargs)
    assert bootstrap.method_for(y.shape[0], y.shape[0]) == "rows" and bootstrap.method_for(y.shape[0], 0) == "binned"
    shares = []
    for a, b in zip(rows, cells):
        np.testing.assert_array_equal(a.n, b.n)
        np.testing.assert_array_equal(a.estimate, b.estimate)
        (a_lo, a_hi), (b_lo, b_hi) = a.interval(0.95), b.interval(0.95)
        assert (np.isnan(a_lo) == np.isnan(b_lo)).all()
        keep = np.isfinite(a_lo) & (a_hi > a_lo)
        shares.append((np.maximum(np.abs(a_lo - b_lo), np.abs(a_hi - b_hi))[keep] / (a_hi - a_lo)[keep]))
    share = np.concatenate(shares)
    assert share.size > 40 and np.median(share) < 0.15 and share.max() < 0.5, (np.median(share), share.max())
    small = [g for g, n in enumerate(rows[1].n) if 0 < n < 1500]  # race C: point estimates only
    assert small
    assert np.isnan(rows[1].interval(0.95)[0][small]).all() and np.isnan(cells[1].interval(0.95)[0][small]).all()


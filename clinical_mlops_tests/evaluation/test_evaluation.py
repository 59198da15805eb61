"""Tests for clinical_mlops.evaluation.metrics: weighted metrics, bootstrap CIs, subgroups, thresholds."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from clinical_mlops.core import bootstrap
from clinical_mlops.evaluation import metrics as ev
from clinical_mlops.evaluation.metrics import (
    METRICS,
    MetricEstimate,
    alerts_per_100,
    bootstrap_metrics,
    calibration_table,
    metrics_by_group,
    operating_threshold,
    plot_calibration,
    plot_roc,
    plot_roc_by_group,
)

PNG_MAGIC = b"\x89PNG"


def make_data(n: int, seed: int = 0, prevalence: float = 0.2, decimals: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels and informative, somewhat miscalibrated scores in [0, 1]."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    s = 1.0 / (1.0 + np.exp(-(-1.6 + 1.2 * y + rng.normal(0.0, 1.0, n))))
    if decimals is not None:
        s = np.round(s, decimals)
    return y, s


EVALUATION_COLUMNS = [bootstrap.METRICS.index(m) for m in METRICS]


def kernel(y: np.ndarray, s: np.ndarray, weights: np.ndarray, threshold: float) -> np.ndarray:
    """The bootstrap kernel's weighted metrics (``METRICS`` columns) for rows of ``weights`` (original row order)."""
    sub = bootstrap.subset(y.astype(float), s, threshold)
    return bootstrap.weighted_metrics(np.asarray(weights, dtype=np.float64), sub)[:, EVALUATION_COLUMNS]


def reference(y: np.ndarray, s: np.ndarray, threshold: float,
              weights: np.ndarray | None = None) -> dict[str, float]:
    """sklearn / plain-numpy reference values."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    pred = (s >= threshold).astype(int)
    bins = np.minimum(np.floor(s * 10).astype(int), 9)  # [k/10, (k+1)/10), 1.0 in the last
    ece = sum(abs(np.sum(w[bins == b] * (s[bins == b] - y[bins == b]))) for b in range(10)) / w.sum()
    return {
        "auroc": roc_auc_score(y, s, sample_weight=weights),
        "auprc": average_precision_score(y, s, sample_weight=weights),
        "brier": brier_score_loss(y, s, sample_weight=weights),
        "ece": ece,
        "calibration_in_the_large": np.average(s, weights=w) - np.average(y, weights=w),
        "prevalence": np.average(y, weights=w),
        "selection_rate": np.average(pred, weights=w),
        "tpr": recall_score(y, pred, sample_weight=weights),
        "fpr": np.sum(w * pred * (1 - y)) / np.sum(w * (1 - y)),
        "precision": precision_score(y, pred, sample_weight=weights),
    }


DATASETS = {
    "continuous": lambda: make_data(3000, seed=1),
    "ties_2dp": lambda: make_data(3000, seed=2, decimals=2),
    "heavy_ties_1dp": lambda: make_data(800, seed=3, decimals=1),
    "small_n": lambda: make_data(40, seed=4),
    "rare_positive": lambda: make_data(2000, seed=5, prevalence=0.03, decimals=2),
    "all_scores_tied": lambda: (np.array([0, 1, 0, 1, 1, 0, 0]), np.full(7, 0.4)),
    "perfect_separation": lambda: (np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.2, 0.8, 0.9])),
}


# ---------------------------------------------------------------------------------------------
# point estimates and the weighted kernel agree with sklearn
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_point_estimates_match_sklearn(name: str) -> None:
    y, s = DATASETS[name]()
    threshold = float(np.quantile(s, 0.7))
    result = bootstrap_metrics(y, s, threshold=threshold, n_boot=0)
    expected = reference(y, s, threshold)
    assert list(result) == list(METRICS)
    for metric in METRICS:
        assert isinstance(result[metric], MetricEstimate)
        assert result[metric].metric == metric
        assert result[metric].estimate == pytest.approx(expected[metric], abs=1e-9), metric


@pytest.mark.parametrize("name", ["continuous", "ties_2dp", "heavy_ties_1dp", "all_scores_tied"])
@pytest.mark.parametrize("kind", ["unit", "counts_with_zeros", "fractional"])
def test_weighted_kernel_matches_sklearn_sample_weight(name: str, kind: str) -> None:
    y, s = DATASETS[name]()
    rng = np.random.default_rng(11)
    weights = {
        "unit": np.ones(len(y)),
        "counts_with_zeros": rng.integers(0, 4, len(y)).astype(float),
        "fractional": rng.uniform(0.1, 3.0, len(y)),
    }[kind]
    weights[np.flatnonzero(y == 1)[0]] = max(weights[np.flatnonzero(y == 1)[0]], 1.0)
    threshold = 0.35
    got = kernel(y, s, weights, threshold)[0]
    expected = reference(y, s, threshold, weights=None if kind == "unit" else weights)
    for k, metric in enumerate(METRICS):
        assert got[k] == pytest.approx(expected[metric], abs=1e-9), metric


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_count_weights_equal_explicit_resamples(dtype: type) -> None:
    """Each row of count weights gives the metrics of the matching resampled data set."""
    y, s = make_data(600, seed=7, decimals=2)
    rng = np.random.default_rng(3)
    counts = np.stack([np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y))
                       for _ in range(5)])
    sub = bootstrap.subset(y.astype(float), s, 0.3)
    got = bootstrap.weighted_metrics(counts.astype(dtype), sub)[:, EVALUATION_COLUMNS]
    tol = 1e-9 if dtype == np.float64 else 1e-5
    for row, c in zip(got, counts):
        yr, sr = np.repeat(y, c), np.repeat(s, c)
        expected = reference(yr, sr, 0.3)
        for k, metric in enumerate(METRICS):
            assert row[k] == pytest.approx(expected[metric], abs=tol), metric


def test_undefined_metrics_are_nan() -> None:
    s = np.array([0.1, 0.4, 0.6, 0.9])
    only_negatives = bootstrap_metrics(np.zeros(4), s, threshold=0.5, n_boot=20)
    for metric in ("auroc", "auprc", "tpr"):
        est = only_negatives[metric]
        assert math.isnan(est.estimate) and math.isnan(est.lower) and math.isnan(est.upper)
    assert only_negatives["fpr"].estimate == 0.5
    nobody_flagged = bootstrap_metrics(np.array([0, 1, 0, 1]), s, threshold=2.0, n_boot=0)
    assert math.isnan(nobody_flagged["precision"].estimate)
    assert nobody_flagged["selection_rate"].estimate == 0.0


def test_ece_matches_calibration_table() -> None:
    y, s = make_data(2000, seed=8)
    table = calibration_table(y, s)
    filled = table[table["n"] > 0]
    ece = float(np.sum(filled["n"] * (filled["mean_score"] - filled["observed_rate"]).abs()) / len(y))
    assert bootstrap_metrics(y, s, threshold=0.5, n_boot=0)["ece"].estimate == pytest.approx(ece, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# bootstrap intervals
# ---------------------------------------------------------------------------------------------


def test_intervals_contain_estimate_and_shrink_with_n() -> None:
    small = bootstrap_metrics(*make_data(400, seed=9), threshold=0.3, n_boot=200, seed=1)
    large = bootstrap_metrics(*make_data(8000, seed=9), threshold=0.3, n_boot=200, seed=1)
    for metric in METRICS:
        for result in (small, large):
            est = result[metric]
            assert est.lower <= est.estimate <= est.upper, metric
        assert large[metric].upper - large[metric].lower < small[metric].upper - small[metric].lower, metric


def test_same_seed_is_deterministic_and_seed_matters() -> None:
    y, s = make_data(1500, seed=10, decimals=2)
    first = bootstrap_metrics(y, s, threshold=0.3, seed=42)
    second = bootstrap_metrics(y, s, threshold=0.3, seed=42)
    other = bootstrap_metrics(y, s, threshold=0.3, seed=43)
    assert first == second
    assert first["auroc"].lower != other["auroc"].lower


def test_blocking_does_not_change_results() -> None:
    y, s = make_data(1000, seed=12)
    codes = np.arange(1000) % 3
    order = np.argsort(-s, kind="stable")  # the evaluation's draw order
    subsets = [bootstrap.subset(y[order], s[order], 0.3)] + [
        bootstrap.subset(y[order], s[order], 0.3, np.flatnonzero(codes[order] == g)) for g in range(3)]
    kwargs = dict(n_boot=50, seed=5, weights_dtype=np.float32)
    whole = bootstrap.row_replicates(1000, subsets, **kwargs)
    blocked = bootstrap.row_replicates(1000, subsets, block_bytes=7 * 1000 * 4, **kwargs)  # 7 replicates per block
    # same draws; only float32 summation order inside the matrix product may differ
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and the evaluation's table is those replicates' intervals
    table = metrics_by_group(y, s, {"g": codes}, threshold=0.3, **kwargs)
    for k, (attribute, group) in enumerate([("overall", "all"), ("g", "0"), ("g", "1"), ("g", "2")]):
        lo, hi = bootstrap.percentile_interval(whole[k], 0.95)
        rows = table[(table["attribute"] == attribute) & (table["group"] == group)]
        np.testing.assert_array_equal(rows["lower"].to_numpy(), lo[EVALUATION_COLUMNS])
        np.testing.assert_array_equal(rows["upper"].to_numpy(), hi[EVALUATION_COLUMNS])


def test_float64_weights_agree_with_float32() -> None:
    y, s = make_data(3000, seed=13)
    f32 = bootstrap_metrics(y, s, threshold=0.3, n_boot=100, seed=3)
    f64 = bootstrap_metrics(y, s, threshold=0.3, n_boot=100, seed=3, weights_dtype=np.float64)
    for metric in METRICS:
        assert f32[metric].estimate == f64[metric].estimate
        assert f32[metric].lower == pytest.approx(f64[metric].lower, abs=1e-5)
        assert f32[metric].upper == pytest.approx(f64[metric].upper, abs=1e-5)


def test_wider_confidence_gives_wider_interval() -> None:
    y, s = make_data(2000, seed=14)
    narrow = bootstrap_metrics(y, s, threshold=0.3, confidence=0.5)["auroc"]
    wide = bootstrap_metrics(y, s, threshold=0.3, confidence=0.99)["auroc"]
    assert wide.lower < narrow.lower < narrow.upper < wide.upper


@pytest.mark.parametrize("kwargs", [{"n_boot": -1}, {"confidence": 1.0}, {"confidence": 0.0}])
def test_bad_bootstrap_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        bootstrap_metrics(*make_data(50), threshold=0.5, **kwargs)


@pytest.mark.parametrize(
    ("y", "s"),
    [([0, 1, 2], [0.1, 0.2, 0.3]), ([0, 1], [0.1, 0.2, 0.3]), ([0, 1], [0.1, np.nan]), ([], [])],
)
def test_bad_inputs_raise(y: list, s: list) -> None:
    with pytest.raises(ValueError):
        bootstrap_metrics(np.array(y), np.array(s), threshold=0.5)


# ---------------------------------------------------------------------------------------------
# subgroup table
# ---------------------------------------------------------------------------------------------


def grouped_data() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | pd.Series]]:
    y, s = make_data(3000, seed=15, decimals=3)
    rng = np.random.default_rng(15)
    race = rng.choice(["A", "B", "C"], size=3000, p=[0.6, 0.3, 0.1]).astype(object)
    race[:5] = "Tiny"  # a group far below min_group_size
    sex = pd.Series(rng.choice(["F", "M"], size=3000), index=np.arange(3000) + 1000)
    site = np.where(rng.random(3000) < 0.05, None, rng.choice(["north", "south"], size=3000))
    single = np.where(np.arange(3000) < 40, "neg_only", "rest")
    y[:40] = 0  # the "neg_only" group has one class
    return y, s, {"race": race, "sex": sex, "site": site, "cohort": single}


def test_metrics_by_group_rows_and_columns() -> None:
    y, s, groups = grouped_data()
    table = metrics_by_group(y, s, groups, threshold=0.3, n_boot=50, min_group_size=20)
    assert list(table.columns) == ["attribute", "group", "n", "n_positive", "metric", "estimate",
                                   "lower", "upper"]
    keys = table[["attribute", "group"]].drop_duplicates().apply(tuple, axis=1).tolist()
    assert keys == [("overall", "all"), ("race", "A"), ("race", "B"), ("race", "C"),
                    ("race", "Tiny"), ("sex", "F"), ("sex", "M"), ("site", "north"),
                    ("site", "south"), ("site", "missing"), ("cohort", "neg_only"),
                    ("cohort", "rest")]
    assert len(table) == len(keys) * len(METRICS)
    for _, block in table.groupby(["attribute", "group"], sort=False):
        assert block["metric"].tolist() == list(METRICS)
    for attribute, values in groups.items():
        sizes = table[table["attribute"] == attribute].drop_duplicates("group")
        assert sizes["n"].sum() == len(y)
        assert sizes["n_positive"].sum() == y.sum()
    assert table["n"].dtype == np.int64 and table["n_positive"].dtype == np.int64


def test_metrics_by_group_estimates_match_subsets() -> None:
    y, s, groups = grouped_data()
    table = metrics_by_group(y, s, groups, threshold=0.3, n_boot=20).set_index(
        ["attribute", "group", "metric"])
    sex = groups["sex"].to_numpy()  # matched by position, not by index
    for label in ("F", "M"):
        mask = sex == label
        expected = reference(y[mask], s[mask], 0.3)
        for metric in METRICS:
            row = table.loc[("sex", label, metric)]
            assert row["n"] == mask.sum()
            assert row["estimate"] == pytest.approx(expected[metric], abs=1e-9), metric


def test_overall_rows_equal_bootstrap_metrics() -> None:
    y, s, groups = grouped_data()
    table = metrics_by_group(y, s, groups, threshold=0.3, n_boot=60, seed=9)
    overall = table[table["attribute"] == "overall"].set_index("metric")
    direct = bootstrap_metrics(y, s, threshold=0.3, n_boot=60, seed=9)
    for metric, est in direct.items():
        got = overall.loc[metric]
        np.testing.assert_equal([got["estimate"], got["lower"], got["upper"]],
                                [est.estimate, est.lower, est.upper])


def test_single_class_group_and_tiny_group() -> None:
    y, s, groups = grouped_data()
    table = metrics_by_group(y, s, groups, threshold=0.3, n_boot=50, min_group_size=20)
    rows = table.set_index(["attribute", "group", "metric"]).sort_index()
    neg_only = rows.loc[("cohort", "neg_only")]
    assert neg_only["n_positive"].iloc[0] == 0
    for metric in ("auroc", "auprc", "tpr"):
        assert neg_only.loc[metric, ["estimate", "lower", "upper"]].isna().all()
    assert neg_only.loc["fpr", ["estimate", "lower", "upper"]].notna().all()
    tiny = rows.loc[("race", "Tiny")]
    assert (tiny["n"] == 5).all()
    assert tiny.loc["prevalence", "estimate"] == pytest.approx(y[:5].mean())
    assert tiny["lower"].isna().all() and tiny["upper"].isna().all()
    big = rows.loc[("race", "A")]
    assert big[["estimate", "lower", "upper"]].notna().all().all()


def test_group_order_categorical_and_reserved_name() -> None:
    y, s = make_data(300, seed=16)
    cat = pd.Categorical(np.where(np.arange(300) % 2 == 0, "low", "high"),
                         categories=["low", "high", "unused"])
    table = metrics_by_group(y, s, {"band": cat, "num": np.arange(300) % 11}, threshold=0.3,
                             n_boot=0)
    assert table.loc[table["attribute"] == "band", "group"].unique().tolist() == ["low", "high"]
    assert table.loc[table["attribute"] == "num", "group"].unique().tolist() == [
        str(i) for i in range(11)]
    assert table["lower"].isna().all()
    with pytest.raises(ValueError):
        metrics_by_group(y, s, {"overall": np.zeros(300)}, threshold=0.3)
    with pytest.raises(ValueError):
        metrics_by_group(y, s, {"short": np.zeros(10)}, threshold=0.3)


# ---------------------------------------------------------------------------------------------
# thresholds, alerts, calibration table
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_top_fraction_flags_that_fraction(fraction: float) -> None:
    y, s = make_data(2000, seed=18)
    threshold = operating_threshold(y, s, strategy="top_fraction", value=fraction)
    assert np.mean(s >= threshold) == pytest.approx(fraction)
    assert alerts_per_100(s, threshold) == pytest.approx(100 * fraction)
    assert bootstrap_metrics(y, s, threshold=threshold, n_boot=0)["selection_rate"].estimate == \
        pytest.approx(fraction)


def test_top_fraction_does_not_need_labels_and_flags_ties() -> None:
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    threshold = operating_threshold(None, s, strategy="top_fraction", value=0.4)
    assert threshold == 0.5
    assert alerts_per_100(s, threshold) == 80.0


def test_fixed_and_youden_thresholds() -> None:
    y, s = make_data(2000, seed=19, decimals=2)
    assert operating_threshold(y, s, strategy="fixed", value=0.37) == 0.37
    threshold = operating_threshold(y, s, strategy="youden")
    fpr, tpr, thresholds = roc_curve(y, s)
    assert threshold == pytest.approx(thresholds[np.argmax(tpr - fpr)])
    pred = s >= threshold
    youden = pred[y == 1].mean() - pred[y == 0].mean()
    assert youden == pytest.approx(np.max(tpr - fpr))


@pytest.mark.parametrize(
    ("y", "strategy", "value"),
    [(None, "youden", 0.0), (np.zeros(5), "youden", 0.0), (np.zeros(5), "top_fraction", 1.5),
     (np.zeros(5), "best", 0.2)],
)
def test_bad_threshold_requests_raise(y, strategy: str, value: float) -> None:
    with pytest.raises(ValueError):
        operating_threshold(y, np.linspace(0, 1, 5), strategy=strategy, value=value)


def test_calibration_table() -> None:
    y = np.array([0, 1, 1, 0, 1, 0])
    s = np.array([0.05, 0.15, 0.95, 1.0, 0.55, 0.58])
    table = calibration_table(y, s, n_bins=10)
    assert list(table.columns) == ["bin", "mean_score", "observed_rate", "n"]
    assert table["bin"].tolist() == list(range(10))
    assert table["n"].tolist() == [1, 1, 0, 0, 0, 2, 0, 0, 0, 2]
    assert table.loc[9, "mean_score"] == pytest.approx(0.975)
    assert table.loc[9, "observed_rate"] == pytest.approx(0.5)
    assert table.loc[5, "observed_rate"] == pytest.approx(0.5)
    assert np.isnan(table.loc[2, "mean_score"])


def test_calibration_bins_have_exact_edges() -> None:
    s = np.array([0.0, 0.1, 0.3, 0.6, 0.7, 0.99, 1.0])
    table = calibration_table(np.zeros(len(s)), s)
    assert table.loc[table["n"] > 0, "bin"].tolist() == [0, 1, 3, 6, 7, 9]
    assert table.loc[9, "n"] == 2


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plot", ["roc", "calibration", "roc_by_group"])
def test_plots_return_png(plot: str) -> None:
    y, s = make_data(500, seed=20)
    groups = np.where(np.arange(500) % 3 == 0, "a", "b").astype(object)
    groups[:10] = "one_class"
    y[:10] = 0
    png = {
        "roc": lambda: plot_roc(y, s, "ROC"),
        "calibration": lambda: plot_calibration(y, s, "Calibration"),
        "roc_by_group": lambda: plot_roc_by_group(y, s, groups, "ROC by group"),
    }[plot]()
    assert isinstance(png, bytes) and png.startswith(PNG_MAGIC) and len(png) > 1000


def test_module_imports_no_pyplot_or_orchestration() -> None:
    """Plotting uses Figure + Agg directly; no pyplot, dagster or mlflow import (metrics nor its kernel)."""
    paths = [*Path(ev.__file__).parent.glob("*.py"), *Path(bootstrap.__file__).parent.glob("*.py")]
    assert len(paths) > 2
    imported: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text())
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
        imported |= {node.module for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
    forbidden = {"matplotlib.pyplot", "dagster", "mlflow"}
    assert not {name for name in imported if name.split(".")[0] in forbidden or name in forbidden}
    y, s = make_data(50, seed=22)
    assert plot_roc(np.zeros(50), s, "one class").startswith(PNG_MAGIC)  # degenerate input

"""Model evaluation: discrimination, calibration and operating-point metrics with bootstrap CIs.

Everything here is plain numpy/pandas/matplotlib so it can be unit-tested and reused outside
the orchestration layer.

Bootstrap design
----------------
Confidence intervals are percentile intervals from a nonparametric bootstrap implemented with
*count weights*: each replicate is a vector of multinomial counts (how often each row was drawn
when resampling ``n`` rows with replacement), generated with ``numpy.random.default_rng(seed)``.
Every metric is computed as a weighted statistic, vectorised over a block of replicates at once:

* rows are sorted by descending score once; tie groups (equal scores) are found once;
* weighted AUROC = sum over tie groups of positive weight x (negative weight strictly below
  + half the negative weight tied), divided by total positive x negative weight;
* weighted average precision = sum over tie groups of positive weight x precision at that
  threshold, divided by total positive weight (sklearn's ``average_precision_score``);
* Brier, ECE, calibration-in-the-large and the threshold rates come from one matrix product of
  the weights with a small per-row feature matrix.

Subgroup metrics reuse the *same* cohort-level replicates restricted to the group's rows (the
cohort is resampled, and each group's metric is recomputed on each resampled cohort), so the
group size varies across replicates like it would in a new sample of patients. A replicate in
which a metric is undefined (e.g. no positives in a small group) is skipped when forming the
interval; if no replicate defines it the interval is NaN.

Above ``exact_max_rows`` rows (250k by default) the replicates are drawn as multinomial counts
over (group, score bin, label) cells instead (:mod:`clinical_mlops.core.binned_bootstrap`: 1,000
score quantile bins refined at the ECE edges and the threshold), per attribute; the threshold
rates are exact on every replicate, AUROC/AUPRC treat a bin as tied, Brier and ECE use cell
means. Point estimates are always computed on the rows. :func:`bootstrap_description` says
which method an evaluation of ``n`` rows used.

Note that percentile intervals of biased statistics (ECE is the main one: it is an absolute
value and is biased upwards on resamples) need not contain the point estimate.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clinical_mlops.core import binned_bootstrap as binned

try:  # installed with scikit-learn; only used to keep BLAS single-threaded in the bootstrap
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = [
    "METRICS",
    "MetricEstimate",
    "alerts_per_100",
    "bootstrap_description",
    "bootstrap_metrics",
    "calibration_table",
    "metrics_by_group",
    "operating_threshold",
    "plot_calibration",
    "plot_roc",
    "plot_roc_by_group",
]

METRICS: tuple[str, ...] = (
    "auroc",
    "auprc",
    "brier",
    "ece",
    "calibration_in_the_large",
    "prevalence",
    "selection_rate",
    "tpr",
    "fpr",
    "precision",
)
"""Metric names, in the order they are reported."""

ECE_BINS = 10
"""Equal-width bins on [0, 1] used by the expected calibration error."""

_BLOCK_BYTES = 48 * 1024 * 1024
"""Upper bound on one block of bootstrap weights (replicates x rows). Peak memory is about
twice this (weights plus a scratch buffer of the same size) plus small per-positive arrays."""

EXACT_MAX_ROWS = 250_000
"""Above this many rows the bootstrap is binned (cell counts); see the module docstring."""

MAX_PLOT_POINTS = 2_000
"""ROC curves are drawn through at most this many of their points (the AUROC label is exact)."""

OVERALL_ATTRIBUTE = "overall"
OVERALL_GROUP = "all"
MISSING_GROUP = "missing"
"""Label given to rows whose group value is missing (NaN/None)."""

_TABLE_COLUMNS = ["attribute", "group", "n", "n_positive", "metric", "estimate", "lower", "upper"]


@dataclass(frozen=True)
class MetricEstimate:
    """A point estimate with a bootstrap percentile interval (NaN where undefined)."""

    metric: str
    estimate: float
    lower: float
    upper: float


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------


def _as_labels(y_true: object) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.float64)
    y = y.astype(np.float64)
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0/1 (or boolean) labels")
    return y


def _as_scores(y_score: object, n: int | None = None) -> np.ndarray:
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"y_score must be one-dimensional, got shape {s.shape}")
    if n is not None and s.shape[0] != n:
        raise ValueError(f"y_true and y_score differ in length ({n} vs {s.shape[0]})")
    if not np.isfinite(s).all():
        raise ValueError("y_score must be finite")
    return s


def _inputs(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(y_true)
    s = _as_scores(y_score, y.shape[0])
    if y.shape[0] == 0:
        raise ValueError("cannot evaluate an empty sample")
    return y, s


def _bin_index(s: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin on [0, 1]: bins are [k/n, (k+1)/n) and the last one includes 1."""
    inner_edges = np.arange(1, n_bins) / n_bins  # exact k/n (linspace gives 0.30000000000000004)
    return np.digitize(s, inner_edges, right=False)


# ---------------------------------------------------------------------------------------------
# weighted metrics, vectorised over replicates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """One evaluated subset, its rows in descending-score order.

    The ranking metrics only need, for every positive row, cumulative weights at the edges of
    its tie group, so the indices below are all per positive (``p`` = number of positives).
    """

    positions: np.ndarray | None  # columns of the cohort's sorted weight matrix; None = all
    y: np.ndarray  # labels (sorted), float64
    features: np.ndarray  # (m, 6 + ECE_BINS) float64, see _features
    pos: np.ndarray  # columns of the positives (ascending)
    group_end: np.ndarray  # last column of each positive's tie group
    group_before: np.ndarray  # column just before each positive's tie group (-1 at the top)
    pos_last: np.ndarray  # index (into pos) of the last positive in the same tie group
    pos_before: np.ndarray  # index (into pos) of the last positive above the tie group (-1: none)
    ties: bool  # whether any two rows share a score

    @property
    def size(self) -> int:
        return int(self.y.shape[0])


def _features(y: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    """Per-row columns whose weighted sums give every non-ranking metric."""
    pred = (s >= threshold).astype(np.float64)
    feats = np.zeros((y.shape[0], 6 + ECE_BINS), dtype=np.float64)
    feats[:, 0] = 1.0
    feats[:, 1] = y
    feats[:, 2] = s
    feats[:, 3] = (s - y) ** 2
    feats[:, 4] = pred
    feats[:, 5] = pred * y
    bins = _bin_index(s, ECE_BINS)
    feats[np.arange(y.shape[0]), 6 + bins] = s - y
    return feats


def _prepare(y_sorted: np.ndarray, s_sorted: np.ndarray, threshold: float,
             positions: np.ndarray | None) -> _Prepared:
    """Prepare a subset given its labels and scores already in descending-score order."""
    m = y_sorted.shape[0]
    new_group = np.ones(m, dtype=bool)
    np.not_equal(s_sorted[1:], s_sorted[:-1], out=new_group[1:])
    group_id = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:] - 1, m - 1] if m else starts
    pos = np.flatnonzero(y_sorted == 1.0)
    pos_group = group_id[pos]
    return _Prepared(
        positions=positions,
        y=y_sorted,
        features=_features(y_sorted, s_sorted, threshold),
        pos=pos,
        group_end=ends[pos_group],
        group_before=starts[pos_group] - 1,
        pos_last=np.searchsorted(pos_group, pos_group, side="right") - 1,
        pos_before=np.searchsorted(pos_group, pos_group, side="left") - 1,
        ties=bool(starts.shape[0] < m),
    )


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _gather_before(cum: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``cum[:, idx]`` with index -1 meaning "nothing yet" (0)."""
    out = np.take(cum, np.maximum(idx, 0), axis=1)
    out[:, idx < 0] = 0.0
    return out


def _weighted_metrics(w: np.ndarray, prep: _Prepared, *, cum_out: np.ndarray | None = None
                      ) -> np.ndarray:
    """Metrics for each row of weights ``w`` (replicates x subset rows, descending-score order).

    Returns a float64 array (replicates x len(METRICS)), NaN where a metric is undefined.
    ``cum_out`` (same shape as ``w``, may be ``w`` itself) receives the running sums of ``w``.
    """
    sums = (w @ prep.features.astype(w.dtype, copy=False)).astype(np.float64)
    total, pos, ssum, sq, flagged, tp = (sums[:, k] for k in range(6))
    out = np.full((w.shape[0], len(METRICS)), np.nan, dtype=np.float64)
    out[:, 2] = _safe_div(sq, total)  # brier
    out[:, 3] = _safe_div(np.abs(sums[:, 6:]).sum(axis=1), total)  # ece
    out[:, 4] = _safe_div(ssum - pos, total)  # calibration in the large
    out[:, 5] = _safe_div(pos, total)  # prevalence
    out[:, 6] = _safe_div(flagged, total)  # selection rate
    out[:, 7] = _safe_div(tp, pos)  # tpr
    out[:, 8] = _safe_div(flagged - tp, total - pos)  # fpr
    out[:, 9] = _safe_div(tp, flagged)  # precision
    if prep.pos.shape[0] == 0:
        return out

    # Ranking metrics. Walking down the scores, a tie group is one threshold. Everything is
    # read off two running sums: of all weight (one pass over the rows) and of positive weight
    # (over the positives only). With count weights in float32 these partial sums are exact
    # integers (below 2**24); only the final sums over positives are accumulated in float64.
    w_pos = np.take(w, prep.pos, axis=1)
    cum_all = np.cumsum(w, axis=1, out=cum_out)
    cum_pos = np.cumsum(w_pos, axis=1)
    p_tot = cum_pos[:, -1].astype(np.float64)
    n_tot = cum_all[:, -1].astype(np.float64) - p_tot
    all_end = np.take(cum_all, prep.group_end, axis=1)  # weight scored at or above the group
    pos_end = np.take(cum_pos, prep.pos_last, axis=1)
    # AUROC: each positive gets the negatives strictly below it plus half of the tied ones
    neg_end = all_end - pos_end  # negatives scored at or above the positive's score
    credit = (cum_all[:, -1:] - cum_pos[:, -1:]) - neg_end
    if prep.ties:
        neg_before = _gather_before(cum_all, prep.group_before)
        neg_before -= _gather_before(cum_pos, prep.pos_before)
        neg_end -= neg_before  # now: negatives tied with the positive
        neg_end *= 0.5
        credit += neg_end
    del neg_end
    credit *= w_pos
    out[:, 0] = _safe_div(credit.sum(axis=1, dtype=np.float64), p_tot * n_tot)
    del credit
    # average precision (sklearn): sum over thresholds of recall increment x precision
    precision_at = np.divide(pos_end, all_end, out=np.zeros_like(pos_end), where=all_end > 0)
    precision_at *= w_pos
    out[:, 1] = _safe_div(precision_at.sum(axis=1, dtype=np.float64), p_tot)
    return out


def _point_estimates(prep: _Prepared) -> np.ndarray:
    ones = np.ones((1, prep.size), dtype=np.float64)
    return _weighted_metrics(ones, prep, cum_out=ones)[0]


def _block_size(n: int, n_boot: int, itemsize: int) -> int:
    return max(1, min(n_boot, _BLOCK_BYTES // max(1, n * itemsize)))


def _bootstrap_replicates(n: int, preps: Sequence[_Prepared | None], *, n_boot: int, seed: int,
                          weights_dtype: np.dtype) -> list[np.ndarray | None]:
    """Replicate metric arrays (n_boot x len(METRICS)) for each prepared subset (None = skip).

    Cohort-level multinomial count weights are drawn row by row (so the draws do not depend on
    the block size) in the cohort's descending-score order and restricted to each subset.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(weights_dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"weights_dtype must be float32 or float64, got {dtype}")
    results = [None if p is None else np.empty((n_boot, len(METRICS))) for p in preps]
    block = _block_size(n, n_boot, dtype.itemsize)
    # The per-block products are skinny (replicates x rows @ rows x 16); multi-threaded BLAS
    # only adds overhead there (about 2x slower end to end on a 2-core machine).
    limit = (threadpool_limits(limits=1, user_api="blas")
             if threadpool_limits is not None and n_boot > 0 else contextlib.nullcontext())
    if any(p is not None for p in preps):
        with limit:
            _fill_replicates(rng, n, preps, results, n_boot, block, dtype)
    return results


def _fill_replicates(rng: np.random.Generator, n: int, preps: Sequence[_Prepared | None],
                     results: list[np.ndarray | None], n_boot: int, block: int,
                     dtype: np.dtype) -> None:
    weights = np.empty((block, n), dtype=dtype)
    scratch = np.empty(block * n, dtype=dtype)  # gathered subset weights / running sums
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        w = weights[:b]
        for i in range(b):
            w[i] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        for prep, res in zip(preps, results):
            if prep is None or res is None:
                continue
            work = scratch[:b * prep.size].reshape(b, prep.size)
            if prep.positions is None:
                res[done:done + b] = _weighted_metrics(w, prep, cum_out=work)
            else:
                np.take(w, prep.positions, axis=1, out=work)
                res[done:done + b] = _weighted_metrics(work, prep, cum_out=work)
        done += b


def _percentile_interval(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN
        lo, hi = np.nanquantile(reps, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def _check_boot_args(n_boot: int, confidence: float) -> None:
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")


# ---------------------------------------------------------------------------------------------
# public metric API
# ---------------------------------------------------------------------------------------------


def bootstrap_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    threshold: float,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    weights_dtype: type | np.dtype = np.float32,
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = binned.DEFAULT_BINS,
) -> dict[str, MetricEstimate]:
    """Point estimates and bootstrap percentile CIs for every metric in ``METRICS``.

    ``score >= threshold`` counts as a positive prediction. Deterministic for a given seed.
    Above ``exact_max_rows`` rows the bootstrap is binned (the overall rows of ``metrics_by_group``).
    """
    _check_boot_args(n_boot, confidence)
    y, s = _inputs(y_true, y_score)
    if y.shape[0] > exact_max_rows:
        table = metrics_by_group(y, s, {}, threshold=threshold, n_boot=n_boot, seed=seed, confidence=confidence,
                                 exact_max_rows=exact_max_rows, score_bins=score_bins)
        return {r.metric: MetricEstimate(r.metric, float(r.estimate), float(r.lower), float(r.upper))
                for r in table.itertuples(index=False)}
    order = np.argsort(-s, kind="stable")
    prep = _prepare(y[order], s[order], threshold, positions=None)
    est = _point_estimates(prep)
    if n_boot > 0:
        (reps,) = _bootstrap_replicates(y.shape[0], [prep], n_boot=n_boot, seed=seed,
                                        weights_dtype=weights_dtype)
        lo, hi = _percentile_interval(reps, confidence)
    else:
        lo = hi = np.full(len(METRICS), np.nan)
    return {
        name: MetricEstimate(name, float(est[k]),
                             float("nan") if math.isnan(est[k]) else float(lo[k]),
                             float("nan") if math.isnan(est[k]) else float(hi[k]))
        for k, name in enumerate(METRICS)
    }


def _group_labels(values: np.ndarray | pd.Series, n: int, attribute: str
                  ) -> tuple[np.ndarray, list[str]]:
    """Group codes (by position) and their labels; missing values form a ``missing`` group.

    Categorical values keep their category order, other values are sorted.
    """
    if isinstance(values, pd.Series):
        series = values
    elif isinstance(values, (pd.Categorical, pd.Index)):
        series = pd.Series(values)
    else:
        series = pd.Series(np.asarray(values))
    if series.ndim != 1 or series.shape[0] != n:
        raise ValueError(f"groups[{attribute!r}] has length {series.shape[0]}, expected {n}")
    series = series.reset_index(drop=True)
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy().astype(np.int64)
        labels = [str(c) for c in series.cat.categories]
    else:
        try:
            raw_codes, uniques = pd.factorize(series, sort=True)
        except TypeError:  # unorderable mix of types: order by their text
            raw_codes, uniques = pd.factorize(series.map(str).where(series.notna()), sort=True)
        codes = np.asarray(raw_codes, dtype=np.int64)
        labels = [str(u) for u in uniques]
    missing = codes < 0
    if missing.any():
        if MISSING_GROUP not in labels:
            labels.append(MISSING_GROUP)
        codes = np.where(missing, labels.index(MISSING_GROUP), codes)
    return codes, labels


def metrics_by_group(
    y_true: np.ndarray,
    y_score: np.ndarray,
    groups: Mapping[str, np.ndarray | pd.Series],
    *,
    threshold: float,
    n_boot: int = 200,
    seed: int = 0,
    min_group_size: int = 1,
    confidence: float = 0.95,
    weights_dtype: type | np.dtype = np.float32,
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = binned.DEFAULT_BINS,
) -> pd.DataFrame:
    """Long table of metrics overall and per subgroup, one row per (attribute, group, metric).

    Columns: attribute, group, n, n_positive, metric, estimate, lower, upper. The overall rows
    have attribute ``"overall"`` and group ``"all"`` and equal ``bootstrap_metrics`` for the
    same seed. Groups are matched to rows by position; missing group values form a
    ``"missing"`` group; groups with no rows are left out. Groups (and the overall set) smaller
    than ``min_group_size`` get point estimates but NaN intervals.
    """
    _check_boot_args(n_boot, confidence)
    if OVERALL_ATTRIBUTE in groups:
        raise ValueError(f"{OVERALL_ATTRIBUTE!r} is reserved for the whole-cohort rows")
    y, s = _inputs(y_true, y_score)
    n = y.shape[0]
    order = np.argsort(-s, kind="stable")
    y_sorted, s_sorted = y[order], s[order]
    if n > exact_max_rows:
        return _binned_metrics_by_group(y, s, order, groups, threshold=threshold, n_boot=n_boot, seed=seed,
                                        min_group_size=min_group_size, confidence=confidence, score_bins=score_bins)

    subsets: list[tuple[str, str, _Prepared]] = [
        (OVERALL_ATTRIBUTE, OVERALL_GROUP, _prepare(y_sorted, s_sorted, threshold, None))
    ]
    for attribute, values in groups.items():
        codes, labels = _group_labels(values, n, attribute)
        codes_sorted = codes[order]
        # positions of each group's rows in the cohort's descending-score order (ascending)
        by_code = np.argsort(codes_sorted, kind="stable")
        bounds = np.searchsorted(codes_sorted[by_code], np.arange(len(labels) + 1))
        for code, label in enumerate(labels):
            positions = by_code[bounds[code]:bounds[code + 1]]
            if positions.shape[0] == 0:
                continue
            subsets.append((str(attribute), label,
                            _prepare(y_sorted[positions], s_sorted[positions], threshold, positions)))

    boot = [p if (n_boot > 0 and p.size >= min_group_size) else None for _, _, p in subsets]
    reps = _bootstrap_replicates(n, boot, n_boot=n_boot, seed=seed, weights_dtype=weights_dtype)

    nan = np.full(len(METRICS), np.nan)
    frames = []
    for (attribute, label, prep), rep in zip(subsets, reps):
        est = _point_estimates(prep)
        lo, hi = _percentile_interval(rep, confidence) if rep is not None else (nan, nan)
        undefined = np.isnan(est)
        frames.append(pd.DataFrame({
            "attribute": attribute,
            "group": label,
            "n": prep.size,
            "n_positive": int(prep.y.sum()),
            "metric": list(METRICS),
            "estimate": est,
            "lower": np.where(undefined, np.nan, lo),
            "upper": np.where(undefined, np.nan, hi),
        }))
    table = pd.concat(frames, ignore_index=True)[_TABLE_COLUMNS]
    return table.astype({"n": "int64", "n_positive": "int64"})


def bootstrap_description(n: int, *, n_boot: int, exact_max_rows: int = EXACT_MAX_ROWS,
                          score_bins: int = binned.DEFAULT_BINS) -> dict[str, object]:
    """How the intervals of an evaluation of ``n`` rows were computed (for metadata and reports)."""
    method = "rows" if n <= exact_max_rows else "binned"
    return {"method": method, "rows": int(n), "replicates": int(n_boot), "exact_max_rows": int(exact_max_rows),
            "score_bins": int(score_bins) if method == "binned" else None}


def _cell_metrics(count: np.ndarray, score_mean: np.ndarray, squared_error_mean: np.ndarray,
                  keys: binned.ScoreKeys) -> np.ndarray:
    """``METRICS`` per (replicate, group) from cell counts (replicates, groups, keys, 2)."""
    total = count.sum(axis=(2, 3))
    pos = count[..., 1].sum(axis=2)
    flagged = count[:, :, keys.flagged, :].sum(axis=(2, 3))
    tp = count[:, :, keys.flagged, 1].sum(axis=2)
    residual = (count * (score_mean - np.array([0.0, 1.0]))).sum(axis=3)  # sum of s - y per key
    ece_sums = residual @ np.eye(ECE_BINS)[keys.ece_bin]
    out = np.full((*total.shape, len(METRICS)), np.nan)
    out[..., 0] = binned.auroc(count)
    out[..., 1] = binned.average_precision(count)
    out[..., 2] = _safe_div((count * squared_error_mean).sum(axis=(2, 3)), total)
    out[..., 3] = _safe_div(np.abs(ece_sums).sum(axis=-1), total)
    out[..., 4] = _safe_div((count * score_mean).sum(axis=(2, 3)) - pos, total)
    out[..., 5] = _safe_div(pos, total)
    out[..., 6] = _safe_div(flagged, total)
    out[..., 7] = _safe_div(tp, pos)
    out[..., 8] = _safe_div(flagged - tp, total - pos)
    out[..., 9] = _safe_div(tp, flagged)
    return out


def _binned_metrics_by_group(y: np.ndarray, s: np.ndarray, order: np.ndarray,
                             groups: Mapping[str, np.ndarray | pd.Series], *, threshold: float, n_boot: int,
                             seed: int, min_group_size: int, confidence: float, score_bins: int) -> pd.DataFrame:
    """``metrics_by_group`` with exact point estimates and a cell-count bootstrap per attribute."""
    n = y.shape[0]
    keys = binned.score_keys(s, threshold, score_bins)
    rng = np.random.default_rng(seed)
    y_sorted, s_sorted = y[order], s[order]
    attributes: list[tuple[str, np.ndarray, list[str]]] = [
        (OVERALL_ATTRIBUTE, np.zeros(n, dtype=np.int64), [OVERALL_GROUP])]
    for attribute, values in groups.items():
        codes, labels = _group_labels(values, n, attribute)
        attributes.append((str(attribute), codes, labels))
    nan = np.full(len(METRICS), np.nan)
    frames = []
    with (threadpool_limits(limits=1, user_api="blas") if threadpool_limits is not None else contextlib.nullcontext()):
        for attribute, codes, labels in attributes:
            table = binned.cells(keys, y, s, codes, len(labels))
            score_mean, squared_mean = table.mean(table.score_sum), table.mean(table.squared_error_sum)
            reps = [_cell_metrics(block, score_mean, squared_mean, keys)
                    for block in binned.replicate_blocks(table, n_boot, rng)]
            rep = np.concatenate(reps) if reps else None
            codes_sorted = codes[order]
            for code, label in enumerate(labels):
                positions = np.flatnonzero(codes_sorted == code)
                if positions.shape[0] == 0:
                    continue
                prep = _prepare(y_sorted[positions], s_sorted[positions], threshold, positions)
                est = _point_estimates(prep)
                lo, hi = (_percentile_interval(rep[:, code, :], confidence)
                          if rep is not None and prep.size >= min_group_size else (nan, nan))
                undefined = np.isnan(est)
                frames.append(pd.DataFrame({
                    "attribute": attribute, "group": label, "n": prep.size, "n_positive": int(prep.y.sum()),
                    "metric": list(METRICS), "estimate": est,
                    "lower": np.where(undefined, np.nan, lo), "upper": np.where(undefined, np.nan, hi),
                }))
                del prep
    table = pd.concat(frames, ignore_index=True)[_TABLE_COLUMNS]
    return table.astype({"n": "int64", "n_positive": "int64"})


def operating_threshold(
    y_true: np.ndarray | None,
    y_score: np.ndarray,
    *,
    strategy: str = "top_fraction",
    value: float = 0.2,
) -> float:
    """Score threshold (``score >= threshold`` is flagged) chosen by ``strategy``.

    * ``"fixed"``: ``value`` is the threshold.
    * ``"top_fraction"``: flag the top ``value`` fraction (the ``round(value * n)`` highest
      scores; rows tied with the last one flagged are flagged too). ``y_true`` is not used.
    * ``"youden"``: the ROC threshold maximising TPR - FPR (needs both classes).
    """
    if strategy == "fixed":
        return float(value)
    s = _as_scores(y_score)
    if s.shape[0] == 0:
        raise ValueError("cannot choose a threshold from no scores")
    if strategy == "top_fraction":
        if not 0.0 <= value <= 1.0:
            raise ValueError("top_fraction value must be in [0, 1]")
        k = int(math.floor(value * s.shape[0] + 0.5))
        if k == 0:
            return float(np.nextafter(s.max(), np.inf))
        return float(np.partition(s, s.shape[0] - k)[s.shape[0] - k])
    if strategy == "youden":
        if y_true is None:
            raise ValueError("the youden strategy needs y_true")
        y = _as_labels(y_true)
        s = _as_scores(s, y.shape[0])
        n_pos = y.sum()
        n_neg = y.shape[0] - n_pos
        if n_pos == 0 or n_neg == 0:
            raise ValueError("the youden strategy needs both classes in y_true")
        order = np.argsort(-s, kind="stable")
        s_sorted, y_sorted = s[order], y[order]
        last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
        tpr = np.cumsum(y_sorted)[last_of_tie] / n_pos
        fpr = np.cumsum(1.0 - y_sorted)[last_of_tie] / n_neg
        return float(s_sorted[last_of_tie][int(np.argmax(tpr - fpr))])
    raise ValueError(f"unknown threshold strategy {strategy!r}; use fixed, top_fraction or youden")


def alerts_per_100(y_score: np.ndarray, threshold: float) -> float:
    """Alerts raised per 100 patients at ``threshold`` (``score >= threshold``)."""
    s = _as_scores(y_score)
    if s.shape[0] == 0:
        return float("nan")
    return float(100.0 * np.mean(s >= threshold))


def calibration_table(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table over ``n_bins`` equal-width bins on [0, 1].

    Columns bin, mean_score, observed_rate, n; every bin is listed (empty bins have n = 0 and
    NaN rates). Scores outside [0, 1] fall in the first/last bin.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    y, s = _inputs(y_true, y_score)
    bins = _bin_index(s, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(bins, weights=s, minlength=n_bins) / count
        observed = np.bincount(bins, weights=y, minlength=n_bins) / count
    return pd.DataFrame({
        "bin": np.arange(n_bins),
        "mean_score": mean_score,
        "observed_rate": observed,
        "n": count.astype(np.int64),
    })


# ---------------------------------------------------------------------------------------------
# plots (PNG bytes; no global pyplot state)
# ---------------------------------------------------------------------------------------------


def _roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve (one point per distinct score, starting at (0, 0)) and its AUROC."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.r_[0.0, np.cumsum(y_sorted)[last_of_tie]]
    fp = np.r_[0.0, np.cumsum(1.0 - y_sorted)[last_of_tie]]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / tp[-1], fp / fp[-1]
    auc = float(np.trapezoid(tpr, fpr)) if tp[-1] > 0 and fp[-1] > 0 else float("nan")
    return fpr, tpr, auc


def _thin(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``MAX_PLOT_POINTS`` points of a curve, first and last kept (a drawing, not a metric)."""
    if fpr.shape[0] <= MAX_PLOT_POINTS:
        return fpr, tpr
    idx = np.unique(np.linspace(0, fpr.shape[0] - 1, MAX_PLOT_POINTS).round().astype(np.int64))
    return fpr[idx], tpr[idx]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _roc_axes(fig: Figure, title: str):
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    return ax


def plot_roc(y_true: np.ndarray, y_score: np.ndarray, title: str) -> bytes:
    """ROC curve as PNG bytes."""
    y, s = _inputs(y_true, y_score)
    fig = Figure(figsize=(5, 5))
    ax = _roc_axes(fig, title)
    fpr, tpr, auc = _roc_points(y, s)
    if not math.isnan(auc):
        ax.plot(*_thin(fpr, tpr), linewidth=2, label=f"AUROC = {auc:.3f}")
    else:
        ax.text(0.5, 0.5, "ROC undefined (one class)", ha="center", va="center")
    ax.legend(loc="lower right")
    return _png(fig)


def plot_calibration(y_true: np.ndarray, y_score: np.ndarray, title: str) -> bytes:
    """Reliability diagram (10 equal-width bins) with a score histogram, as PNG bytes."""
    y, s = _inputs(y_true, y_score)
    table = calibration_table(y, s, n_bins=ECE_BINS)
    shown = table[table["n"] > 0]
    fig = Figure(figsize=(5, 6))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
    ax = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.plot(shown["mean_score"], shown["observed_rate"], marker="o", linewidth=2, label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Observed rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.tick_params(labelbottom=False)
    hist.hist(np.clip(s, 0, 1), bins=np.linspace(0, 1, 51), color="grey")
    hist.set_xlabel("Predicted risk")
    hist.set_ylabel("Count")
    return _png(fig)


def plot_roc_by_group(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray | pd.Series,
                      title: str) -> bytes:
    """One ROC curve per group as PNG bytes (single-class groups are listed but not drawn)."""
    y, s = _inputs(y_true, y_score)
    codes, labels = _group_labels(groups, y.shape[0], "groups")
    fig = Figure(figsize=(6, 6))
    ax = _roc_axes(fig, title)
    for code, label in enumerate(labels):
        mask = codes == code
        if not mask.any():
            continue
        fpr, tpr, auc = _roc_points(y[mask], s[mask])
        if math.isnan(auc):
            ax.plot([], [], linestyle="none", label=f"{label} (n={mask.sum()}, one class)")
        else:
            ax.plot(*_thin(fpr, tpr), linewidth=1.5, label=f"{label} (n={mask.sum()}, AUROC {auc:.3f})")
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)

"""Metrics with bootstrap replicates for every group of several partitions of one cohort's rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clinical_mlops.core.bootstrap._binned import DEFAULT_BINS, binned_replicates, score_keys
from clinical_mlops.core.bootstrap._exact import (
    METRICS,
    Subset,
    percentile_interval,
    point_estimates,
    row_replicates,
    subset,
)

__all__ = ["GroupBootstrap", "group_bootstrap", "method_for"]


@dataclass(frozen=True)
class GroupBootstrap:
    """Point estimates and replicates of ``METRICS`` for each group of one partition of the rows."""

    n: np.ndarray  # rows per group (int64); 0 for a group without rows
    n_positive: np.ndarray  # positives per group (int64)
    estimate: np.ndarray  # (groups, len(METRICS)), on the rows; NaN for a group without rows
    replicates: np.ndarray  # (n_boot, groups, len(METRICS)); NaN for a group not bootstrapped

    def interval(self, confidence: float) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval per (group, metric)."""
        return percentile_interval(self.replicates, confidence)


def method_for(n: int, exact_max_rows: int) -> str:
    """``rows`` up to ``exact_max_rows`` rows, ``binned`` above."""
    return "rows" if n <= exact_max_rows else "binned"


def _group_rows(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Row indices (ascending) of each group code ``0 .. n_groups - 1``."""
    by_code = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by_code], np.arange(n_groups + 1))
    return [by_code[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def group_bootstrap(
    y: np.ndarray,
    s: np.ndarray,
    partitions: Sequence[tuple[np.ndarray, int]],
    *,
    threshold: float,
    n_boot: int,
    seed: int,
    exact_max_rows: int,
    score_bins: int = DEFAULT_BINS,
    min_group_size: int = 1,
    weights_dtype: type | np.dtype = np.float64,
    draw_order: np.ndarray | None = None,
) -> list[GroupBootstrap]:
    """Every group's metrics and replicates, for each partition ``(codes per row, number of groups)``.

    Up to ``exact_max_rows`` rows, all groups of all partitions share one set of row-count
    draws; above it, each partition gets its own multinomial draws over its cells, one after
    the other from one generator. Groups smaller than ``min_group_size`` are not bootstrapped
    (NaN replicates). ``draw_order`` is the order in which rows receive the row draws (a
    permutation; the given order when None) — it only matters for reproducing earlier results.
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    n = y.shape[0]

    def bootstrapped(size: int) -> bool:
        return n_boot > 0 and size > 0 and size >= min_group_size

    out: list[GroupBootstrap] = []
    if method_for(n, exact_max_rows) == "rows":
        order = None if draw_order is None else np.asarray(draw_order, dtype=np.int64)
        y_drawn, s_drawn = (y, s) if order is None else (y[order], s[order])
        subsets: list[list[Subset | None]] = []
        for codes, n_groups in partitions:
            codes = np.asarray(codes, dtype=np.int64)
            group_rows = _group_rows(codes if order is None else codes[order], n_groups)
            subsets.append([subset(y_drawn, s_drawn, threshold, r) if r.shape[0] else None for r in group_rows])
        flat = [sub if sub is not None and bootstrapped(sub.size) else None for subs in subsets for sub in subs]
        reps = iter(row_replicates(n, flat, n_boot=n_boot, seed=seed, weights_dtype=weights_dtype))
        for subs in subsets:
            n_rows = np.array([0 if sub is None else sub.size for sub in subs], dtype=np.int64)
            n_pos = np.array([0 if sub is None else sub.n_positive for sub in subs], dtype=np.int64)
            est = np.full((len(subs), len(METRICS)), np.nan)
            rep = np.full((n_boot, len(subs), len(METRICS)), np.nan)
            for g, sub in enumerate(subs):
                r = next(reps)
                if sub is not None:
                    est[g] = point_estimates(sub)
                if r is not None:
                    rep[:, g] = r
            out.append(GroupBootstrap(n_rows, n_pos, est, rep))
        return out

    keys = score_keys(s, threshold, score_bins)
    rng = np.random.default_rng(seed)
    # Point estimates take each group's rows in descending-score order, ties in row order: the
    # order a subset sorts them into anyway, so sorting once here only saves a sort per group.
    descending = np.argsort(-s, kind="stable")
    y_desc, s_desc = y[descending], s[descending]
    for codes, n_groups in partitions:  # one partition at a time: at 10M rows its row indices take 80 MB
        codes = np.asarray(codes, dtype=np.int64)
        rep = binned_replicates(keys, y, s, codes, n_groups, n_boot=n_boot, rng=rng)
        group_rows = _group_rows(codes[descending], n_groups)
        n_rows = np.array([r.shape[0] for r in group_rows], dtype=np.int64)
        n_pos = np.array([int(y_desc[r].sum()) for r in group_rows], dtype=np.int64)
        est = np.full((n_groups, len(METRICS)), np.nan)
        for g, r in enumerate(group_rows):
            if r.shape[0]:  # one subset at a time: at 10M rows its features take over 1 GB
                est[g] = point_estimates(subset(y_desc, s_desc, threshold, r))
            if not bootstrapped(int(r.shape[0])):
                rep[:, g] = np.nan
        out.append(GroupBootstrap(n_rows, n_pos, est, rep))
    return out

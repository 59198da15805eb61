"""Per-feature drift tests computed from value counts: KS, chi-square and PSI.

Why from counts, and partly by hand: the populations are never loaded row by row. One DuckDB
``GROUP BY`` per feature returns its distinct values with their count on each side (a few
hundred numbers for millions of rows). ``scipy.stats.ks_2samp`` needs the expanded samples,
so the KS statistic D is read off the cumulated counts here (exact, and O(distinct values)
instead of O(rows)); its p-value is scipy's (``stats.kstwo``). The chi-square statistic is
scipy's ``chi2_contingency`` once rare categories are pooled (the pooling rule is the
project's). The population stability index is a one-line formula over the same counts
(Evidently's works on the rows, in pandas, which is what this module avoids).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MIN_EXPECTED_COUNT",
    "PSI_BINS",
    "PSI_EPSILON",
    "chi_square_from_counts",
    "ks_from_counts",
    "numeric_psi",
    "psi_from_counts",
]

PSI_BINS = 10
PSI_EPSILON = 1e-4
MIN_EXPECTED_COUNT = 5.0


def ks_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value from counts over the *sorted* merged values.

    Equals ``scipy.stats.ks_2samp(ref, cur, method="asymp")`` on the expanded samples, without
    expanding them: D is the largest gap between the cumulated count shares.
    """
    from scipy import stats  # scipy loads when a test runs, not when the package is imported

    a = np.asarray(reference_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    na, nb = a.sum(), b.sum()
    if na == 0 or nb == 0:
        return float("nan"), float("nan")
    d = float(np.max(np.abs(np.cumsum(a) / na - np.cumsum(b) / nb)))
    m, n = max(na, nb), min(na, nb)
    en = m * n / (m + n)
    p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return d, p


def chi_square_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray
                           ) -> tuple[float, float, np.ndarray]:
    """Pearson chi-square (no continuity correction) on a 2 x k table, rare cells pooled.

    Returns the statistic, the p-value and the pooling mask (True = category kept on its own).
    Categories whose expected count is under 5 on either side are pooled into one column; if
    fewer than two columns remain there is nothing to test (statistic 0, p-value 1).
    """
    from scipy import stats  # scipy loads when a test runs, not when the package is imported

    a = np.asarray(reference_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    na, nb = a.sum(), b.sum()
    if na == 0 or nb == 0:
        return float("nan"), float("nan"), np.ones(a.shape, dtype=bool)
    total = a + b
    n = na + nb
    keep = np.minimum(total * na / n, total * nb / n) >= MIN_EXPECTED_COUNT
    columns_a = list(a[keep])
    columns_b = list(b[keep])
    if (~keep).any() and total[~keep].sum() > 0:
        columns_a.append(a[~keep].sum())
        columns_b.append(b[~keep].sum())
    table = np.array([columns_a, columns_b])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, keep
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), keep


def psi_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index over matching cells, empty cells floored at 1e-4."""
    a = np.asarray(reference_counts, dtype=np.float64)
    b = np.asarray(current_counts, dtype=np.float64)
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    p = np.maximum(a / a.sum(), PSI_EPSILON)
    q = np.maximum(b / b.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _decile_bins(values: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    """Bin index of each sorted distinct value, with edges at the reference's deciles."""
    cumulative = np.cumsum(reference_counts) / reference_counts.sum()
    probabilities = np.arange(1, PSI_BINS) / PSI_BINS
    positions = np.minimum(np.searchsorted(cumulative, probabilities, side="left"), values.size - 1)
    edges = np.unique(values[positions])
    # a value equal to an edge belongs to the bin ending at that edge
    return np.searchsorted(edges, values, side="left")


def numeric_psi(values: np.ndarray, reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """PSI of a numeric feature over bins at the reference deciles (values sorted, distinct)."""
    if reference_counts.sum() == 0:
        return float("nan")
    bins = _decile_bins(np.asarray(values, dtype=np.float64), np.asarray(reference_counts, dtype=np.float64))
    n_bins = int(bins.max()) + 1 if bins.size else 0
    return psi_from_counts(
        np.bincount(bins, weights=reference_counts, minlength=n_bins),
        np.bincount(bins, weights=current_counts, minlength=n_bins),
    )

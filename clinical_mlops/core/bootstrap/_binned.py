"""Binned bootstrap from cell counts: confidence intervals at millions of rows without rows x replicates.

Resampling ``n`` rows with replacement draws, for any partition of the rows into cells, a
multinomial vector of cell counts with probabilities ``cell size / n``. Every group metric of
the evaluation and the fairness audit is a function of per-cell counts and sums if the cells are

    (group, score key, label)

where the *score key* orders the rows by score: the score's quantile bin (``n_bins`` bins of
equal row count; tied scores share a bin), refined at the ``ECE_BINS`` equal-width calibration
edges and at the operating threshold, so every key lies on one side of the threshold and in one
calibration bin. Counts-based metrics (prevalence, selection rate, TPR, FPR, precision) are then
exact on every replicate. The approximations, all within one key (a quantile bin holds about
``1 / n_bins`` of the rows):

* AUROC and average precision treat the rows of one key as tied (a positive gets half credit
  for the negatives in its key); the error is at most half the share of positive-negative pairs
  that share a key;
* sums of scores and squared errors on a replicate are cell count x cell mean, which ignores
  the spread of scores inside a key (it only affects the bootstrap spread, not the estimate).

Point estimates are always computed on the rows themselves (exactly); only the replicates come
from the cells. The tests compare intervals from cells with the row-level bootstrap.

Why hand-written: no library bootstraps from a contingency table of (group, score key, label)
cells; drawing ``replicates x cells`` multinomial counts instead of ``replicates x rows``
weights is what keeps the bootstrap of 10M predictions in memory and in minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from clinical_mlops.core.bootstrap._exact import ECE_BINS, METRICS, calibration_bin, safe_div, single_blas_thread

__all__ = [
    "DEFAULT_BINS",
    "Cells",
    "ScoreKeys",
    "auroc",
    "average_precision",
    "binned_replicates",
    "cell_metrics",
    "cells",
    "replicate_blocks",
    "score_keys",
]

DEFAULT_BINS = 1000
"""Score quantile bins used by the binned bootstraps."""

_BLOCK_CELLS = 4_000_000
"""Upper bound on replicates x cells held at once (32 MB of float64)."""


@dataclass(frozen=True)
class ScoreKeys:
    """An ordered score key per row, and what each key means."""

    key: np.ndarray  # per row, int64, non-decreasing in score
    flagged: np.ndarray  # per key: score >= threshold
    ece_bin: np.ndarray  # per key: equal-width calibration bin on [0, 1]
    n_bins: int

    @property
    def size(self) -> int:
        return int(self.flagged.shape[0])


def score_keys(scores: np.ndarray, threshold: float, n_bins: int = DEFAULT_BINS) -> ScoreKeys:
    """Quantile bins of ``scores`` refined at the calibration edges and the threshold."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    s = np.asarray(scores, dtype=np.float64)
    values, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # rows scored strictly below each distinct value
    quantile_bin = (before * n_bins) // max(s.shape[0], 1)
    ece = calibration_bin(values)
    flagged = values >= threshold
    change = np.ones(values.shape[0], dtype=bool)
    change[1:] = ((quantile_bin[1:] != quantile_bin[:-1]) | (ece[1:] != ece[:-1])
                  | (flagged[1:] != flagged[:-1]))
    key_of_value = np.cumsum(change) - 1
    first = np.flatnonzero(change)
    return ScoreKeys(key=key_of_value[inverse.reshape(-1)].astype(np.int64), flagged=flagged[first],
                     ece_bin=ece[first], n_bins=int(n_bins))


@dataclass(frozen=True)
class Cells:
    """Counts and sums per (group, key, label); arrays of shape (groups, keys, 2)."""

    count: np.ndarray
    score_sum: np.ndarray
    squared_error_sum: np.ndarray

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def mean(self, sums: np.ndarray) -> np.ndarray:
        out = np.zeros_like(sums)
        np.divide(sums, self.count, out=out, where=self.count > 0)
        return out


def cells(keys: ScoreKeys, y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_groups: int) -> Cells:
    """Per-cell counts, score sums and squared-error sums of rows with group ``codes``."""
    y_int = np.asarray(y).astype(np.int64)
    flat = (np.asarray(codes, dtype=np.int64) * keys.size + keys.key) * 2 + y_int
    size = n_groups * keys.size * 2
    shape = (n_groups, keys.size, 2)
    s = np.asarray(s, dtype=np.float64)
    return Cells(
        count=np.bincount(flat, minlength=size).astype(np.float64).reshape(shape),
        score_sum=np.bincount(flat, weights=s, minlength=size).reshape(shape),
        squared_error_sum=np.bincount(flat, weights=(s - y_int) ** 2, minlength=size).reshape(shape),
    )


def replicate_blocks(table: Cells, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of bootstrap replicates of the cell counts, each (replicates, groups, keys, 2).

    Each replicate is one multinomial draw of ``table.total`` rows over all cells: the same
    distribution as resampling the rows with replacement. Empty cells are never drawn, so only
    the occupied ones are passed to the generator.
    """
    flat = table.count.reshape(-1)
    occupied = np.flatnonzero(flat > 0)
    n = int(flat.sum())
    if n == 0 or n_boot <= 0:
        return
    p = flat[occupied] / n
    block = max(1, min(n_boot, _BLOCK_CELLS // max(flat.shape[0], 1)))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        draws = rng.multinomial(n, p, size=b)
        out = np.zeros((b, flat.shape[0]), dtype=np.float64)
        out[:, occupied] = draws
        yield out.reshape(b, *table.count.shape)
        done += b


def auroc(count: np.ndarray) -> np.ndarray:
    """AUROC per leading index from counts (..., keys, 2) in ascending key order; ties within a key count half."""
    neg, pos = count[..., 0], count[..., 1]
    neg_below = np.cumsum(neg, axis=-1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=-1)
    den = pos.sum(axis=-1) * neg.sum(axis=-1)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def average_precision(count: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step definition) per leading index; a key is one threshold."""
    neg, pos = count[..., 0], count[..., 1]
    pos_at_or_above = np.cumsum(pos[..., ::-1], axis=-1)[..., ::-1]
    all_at_or_above = pos_at_or_above + np.cumsum(neg[..., ::-1], axis=-1)[..., ::-1]
    precision = np.zeros_like(pos_at_or_above)
    np.divide(pos_at_or_above, all_at_or_above, out=precision, where=all_at_or_above > 0)
    num = (pos * precision).sum(axis=-1)
    den = pos.sum(axis=-1)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def cell_metrics(count: np.ndarray, score_mean: np.ndarray, squared_error_mean: np.ndarray,
                 keys: ScoreKeys) -> np.ndarray:
    """``METRICS`` per leading index from cell counts (..., groups, keys, 2) and per-cell means."""
    total = count.sum(axis=(-2, -1))
    pos = count[..., 1].sum(axis=-1)
    flagged = count[..., keys.flagged, :].sum(axis=(-2, -1))
    tp = count[..., keys.flagged, 1].sum(axis=-1)
    score_sum = (count * score_mean).sum(axis=(-2, -1))
    residual = (count * (score_mean - np.array([0.0, 1.0]))).sum(axis=-1)  # sum of s - y per key
    ece_sums = residual @ np.eye(ECE_BINS)[keys.ece_bin]
    out = np.full((*total.shape, len(METRICS)), np.nan)
    out[..., 0] = auroc(count)
    out[..., 1] = average_precision(count)
    out[..., 2] = safe_div((count * squared_error_mean).sum(axis=(-2, -1)), total)
    out[..., 3] = safe_div(np.abs(ece_sums).sum(axis=-1), total)
    out[..., 4] = safe_div(score_sum - pos, total)
    out[..., 5] = safe_div(pos, total)
    out[..., 6] = safe_div(flagged, total)
    out[..., 7] = safe_div(tp, pos)
    out[..., 8] = safe_div(flagged - tp, total - pos)
    out[..., 9] = safe_div(tp, flagged)
    out[..., 10] = safe_div(score_sum, total)
    return out


def binned_replicates(keys: ScoreKeys, y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_groups: int, *,
                      n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Replicate ``METRICS`` (n_boot, groups, len(METRICS)) of every group, drawn over the groups' cells.

    One multinomial draw of all rows per replicate: the groups of one partition share their
    replicates, as in the row bootstrap. ``rng`` is advanced, so partitions drawn one after the
    other from one generator get independent replicates.
    """
    table = cells(keys, y, s, codes, n_groups)
    score_mean, squared_mean = table.mean(table.score_sum), table.mean(table.squared_error_sum)
    with single_blas_thread():
        reps = [cell_metrics(block, score_mean, squared_mean, keys) for block in replicate_blocks(table, n_boot, rng)]
    return np.concatenate(reps) if reps else np.empty((0, n_groups, len(METRICS)))

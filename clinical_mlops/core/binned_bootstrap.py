"""Bootstrap from cell counts: confidence intervals at millions of rows without rows x replicates.

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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from clinical_mlops.core.warehouse import quote_identifier as _quote

__all__ = ["DEFAULT_BINS", "Cells", "ScoreKeys", "auroc", "average_precision", "cells", "coded_predictions", "replicate_blocks", "score_keys"]

DEFAULT_BINS = 1000
"""Score quantile bins used by the binned bootstraps."""

ECE_BINS = 10
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


def _ece_bin(values: np.ndarray) -> np.ndarray:
    inner_edges = np.arange(1, ECE_BINS) / ECE_BINS
    return np.digitize(values, inner_edges, right=False)


def score_keys(scores: np.ndarray, threshold: float, n_bins: int = DEFAULT_BINS) -> ScoreKeys:
    """Quantile bins of ``scores`` refined at the calibration edges and the threshold."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    s = np.asarray(scores, dtype=np.float64)
    values, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # rows scored strictly below each distinct value
    quantile_bin = (before * n_bins) // max(s.shape[0], 1)
    ece = _ece_bin(values)
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


def coded_predictions(
    con: duckdb.DuckDBPyConnection,
    source_sql: str,
    params: Sequence[object],
    attributes: Sequence[str],
    *,
    missing: str | None,
    order_by: str = "encounter_id",
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, list[str]]]]:
    """Labels, scores and each attribute as (integer codes, sorted text labels), fetched as numbers.

    ``source_sql`` selects ``label``, ``score``, ``order_by`` and the attributes. Codes index the
    attribute's distinct values as text, sorted (DuckDB's binary collation, the same order as
    Python's ``sorted``); a missing value becomes ``missing`` or, with ``missing=None``, code -1.
    No string column is materialised in Python: only the distinct values are.
    """
    text = {a: f"CAST({_quote(a)} AS VARCHAR)" if missing is None
            else f"coalesce(CAST({_quote(a)} AS VARCHAR), '{missing}')" for a in attributes}
    codes = ", ".join(
        f"CASE WHEN {expr} IS NULL THEN -1 ELSE CAST(dense_rank() OVER (ORDER BY {expr}) - 1 AS INTEGER) END "
        f"AS {_quote('code_' + a)}" for a, expr in text.items()
    )
    arrays = con.execute(
        f"SELECT CAST(label AS DOUBLE) AS label, CAST(score AS DOUBLE) AS score{', ' + codes if codes else ''} "
        f"FROM ({source_sql}) AS source_rows ORDER BY {_quote(order_by)}",
        list(params),
    ).fetchnumpy()
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for a, expr in text.items():
        labels = [str(r[0]) for r in con.execute(
            f"SELECT DISTINCT {expr} AS v FROM ({source_sql}) AS source_rows WHERE v IS NOT NULL ORDER BY v",
            list(params)).fetchall()]
        out[a] = (np.asarray(arrays["code_" + a], dtype=np.int64), labels)
    return np.asarray(arrays["label"], dtype=np.float64), np.asarray(arrays["score"], dtype=np.float64), out

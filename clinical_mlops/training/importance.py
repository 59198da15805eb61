"""Permutation importance (AUROC drop) with every permuted copy scored in a few large predictions.

:func:`sklearn.inspection.permutation_importance` scores each (column, repeat) copy with its own
``predict`` call: for a gradient-boosted model on a 1,500-row sample that is hundreds of calls whose
fixed cost (input validation, the model's categorical encoder, the scorer's target checks) is larger
than the tree traversal. Here the copies are stacked and scored together, in blocks of at most
``max_rows`` rows (cache-sized: :data:`MAX_ROWS`), and AUROC is the Mann–Whitney rank statistic. The permutations are sklearn's own
(one ``RandomState`` seeded from ``random_state``, reseeded identically for every column, each
repeat shuffling the already permuted column), and so are the scores: the result equals
sklearn's to floating-point rounding (``clinical_mlops_tests/training/test_importance.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.utils import Bunch, check_random_state

__all__ = ["auroc", "permutation_importance"]

MAX_ROWS = 12_000
"""Rows scored per prediction call. Measured on the real extract's root cause (1,500-row samples, 43
columns, 3 repeats): one copy per call 16 s, 9,000–15,000 rows per call 11–13 s, 250,000 rows 18 s —
a tree pass over a block that no longer fits in the CPU cache costs more than the calls saved."""


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the Mann–Whitney statistic (ties count one half), as ``roc_auc_score``."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both outcome classes")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _response(estimator, X) -> np.ndarray:
    """What sklearn's ``roc_auc`` scorer ranks: ``decision_function`` if the model has one, else P(class 1)."""
    if hasattr(estimator, "decision_function"):
        return np.asarray(estimator.decision_function(X), dtype=float).ravel()
    return np.asarray(estimator.predict_proba(X), dtype=float)[:, 1]


def _shuffles(n: int, n_repeats: int, seed: int) -> list[np.ndarray]:
    """The cumulative row orders sklearn applies to a column at each repeat (the same for every column)."""
    state = check_random_state(seed)
    order, positions = np.arange(n), np.arange(n)
    out = []
    for _ in range(n_repeats):
        state.shuffle(order)
        positions = positions[order]
        out.append(positions.copy())
    return out


def _permuted(X, column: int, rows: np.ndarray):
    """``X`` with column ``column`` taken from ``rows`` (its dtype kept)."""
    if isinstance(X, pd.DataFrame):
        block = X.copy()
        values = X.iloc[rows, column]
        values.index = X.index
        block[X.columns[column]] = values
        return block
    block = np.array(X, copy=True)
    block[:, column] = X[rows, column]
    return block


def _stacked(X, jobs: list[tuple[int, np.ndarray]]):
    blocks = [_permuted(X, column, rows) for column, rows in jobs]
    return pd.concat(blocks, ignore_index=True) if isinstance(X, pd.DataFrame) else np.vstack(blocks)


def _batches(jobs: list[tuple[int, np.ndarray]], per_batch: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    for start in range(0, len(jobs), per_batch):
        yield jobs[start:start + per_batch]


def permutation_importance(estimator, X, y, *, n_repeats: int = 5, random_state: int | None = None,
                           max_rows: int = MAX_ROWS) -> Bunch:
    """AUROC drop when each column of ``X`` is permuted, ``n_repeats`` times: sklearn's
    ``permutation_importance(..., scoring="roc_auc")`` result (``importances_mean``, ``importances_std``,
    ``importances``), computed with a handful of prediction calls instead of one per copy."""
    y = np.asarray(y)
    n, n_columns = X.shape
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max + 1)
    shuffles = _shuffles(n, n_repeats, seed)
    baseline = auroc(y, _response(estimator, X))
    jobs = [(column, rows) for column in range(n_columns) for rows in shuffles]
    scores = np.empty(len(jobs))
    done = 0
    for batch in _batches(jobs, max(1, max_rows // max(n, 1))):
        response = _response(estimator, _stacked(X, batch))
        for k in range(len(batch)):
            scores[done + k] = auroc(y, response[k * n:(k + 1) * n])
        done += len(batch)
    importances = baseline - scores.reshape(n_columns, n_repeats)
    return Bunch(importances_mean=importances.mean(axis=1), importances_std=importances.std(axis=1),
                 importances=importances)

"""Checked inputs of the evaluation: 0/1 labels, finite scores, group codes by position."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["MISSING_GROUP", "as_labels", "as_scores", "group_labels", "inputs"]

MISSING_GROUP = "missing"
"""Label given to rows whose group value is missing (NaN/None)."""


def as_labels(y_true: object) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.float64)
    y = y.astype(np.float64)
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0/1 (or boolean) labels")
    return y


def as_scores(y_score: object, n: int | None = None) -> np.ndarray:
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"y_score must be one-dimensional, got shape {s.shape}")
    if n is not None and s.shape[0] != n:
        raise ValueError(f"y_true and y_score differ in length ({n} vs {s.shape[0]})")
    if not np.isfinite(s).all():
        raise ValueError("y_score must be finite")
    return s


def inputs(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    y = as_labels(y_true)
    s = as_scores(y_score, y.shape[0])
    if y.shape[0] == 0:
        raise ValueError("cannot evaluate an empty sample")
    return y, s


def group_labels(values: np.ndarray | pd.Series, n: int, attribute: str
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

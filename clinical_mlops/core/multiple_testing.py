"""Multiple-comparison correction, in one place, from statsmodels.

Fairness (many groups, several metrics) and drift (many features) both test a family of
hypotheses at once; both adjust their p-values here so the same policy word (``holm``,
``benjamini_hochberg``, ``bonferroni``, ``none``) means the same computation everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CORRECTION_METHODS", "adjust_p_values"]

# The policy's names for statsmodels' ``multipletests`` methods.
_STATSMODELS_METHOD: dict[str, str | None] = {
    "holm": "holm",  # step-down, family-wise error rate
    "benjamini_hochberg": "fdr_bh",  # step-up, false discovery rate
    "bonferroni": "bonferroni",
    "none": None,
}
CORRECTION_METHODS: tuple[str, ...] = tuple(_STATSMODELS_METHOD)


def adjust_p_values(p_values: Sequence[float], method: str) -> np.ndarray:
    """Adjusted p-values for ``method``; NaNs (untestable) stay NaN and do not count towards the family."""
    if method not in _STATSMODELS_METHOD:
        raise ValueError(f"unknown correction {method!r}; expected one of {', '.join(CORRECTION_METHODS)}")
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    if not valid.any():
        return out
    statsmodels_method = _STATSMODELS_METHOD[method]
    if statsmodels_method is None:
        out[valid] = p[valid]
        return out
    from statsmodels.stats.multitest import multipletests

    out[valid] = multipletests(p[valid], method=statsmodels_method)[1]
    return out

"""How large a recall gap the data could show: the minimum detectable gap of a group against its reference.

For a group with ``n1`` positives and a reference with ``n2`` positives whose recall is ``p2``, the
smallest drop in recall ``p2 - p1`` that a two-sided test at level ``alpha`` detects with the
given power, by the normal approximation for two proportions on the arcsine scale (Cohen's
``h = 2·asin(√p2) − 2·asin(√p1)``, variance ``1/n1 + 1/n2``): the closed form
``h = (z(1 − alpha/2) + z(power)) · √(1/n1 + 1/n2)``, i.e. statsmodels' ``NormalIndPower`` without
its negligible far-tail term. It answers "how many patients would we need" before a gap can be
told apart from no gap at all (fairlearn issue 796): a bound tighter than this gap cannot be
shown to hold or to be breached at this sample size.
"""

from __future__ import annotations

import math


__all__ = ["DEFAULT_POWER", "cohens_h", "min_detectable_gap"]

DEFAULT_POWER = 0.80


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's effect size of two proportions: ``2·asin(√p1) − 2·asin(√p2)``."""
    return 2.0 * math.asin(math.sqrt(p1)) - 2.0 * math.asin(math.sqrt(p2))


def min_detectable_gap(n_positive: int, reference_n_positive: int, reference_recall: float, *, alpha: float,
                       power: float = DEFAULT_POWER) -> float | None:
    """The smallest recall drop below ``reference_recall`` detectable at ``power`` (two-sided ``alpha``).

    ``None`` when it cannot be computed (no positives on either side, an undefined reference
    recall) or when no drop at all is detectable at these sizes (even a recall of 0 would be missed).
    """
    from scipy.stats import norm  # scipy loads when a test runs, not when the package is imported

    if n_positive < 1 or reference_n_positive < 1:
        return None
    if reference_recall is None or not math.isfinite(reference_recall) or not 0.0 <= reference_recall <= 1.0:
        return None
    h = (norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power)) * math.sqrt(1.0 / n_positive + 1.0 / reference_n_positive)
    angle = math.asin(math.sqrt(reference_recall)) - h / 2.0
    if angle < 0.0:
        return None
    return float(reference_recall - math.sin(angle) ** 2)

"""The policy's value types: the ranges and choices its sections' fields accept.

Pydantic ``Annotated`` types built by :mod:`._fields` from the words of :mod:`._vocabulary`; the
section models (:mod:`._models` and the per-section modules) declare their fields with them.
"""

from __future__ import annotations

from clinical_mlops.governance.policy._fields import choice, integer, number
from clinical_mlops.governance.policy._vocabulary import CORRECTIONS, MITIGATION_CONSTRAINTS, SEVERITIES

__all__ = [
    "Alpha",
    "AtLeast100",
    "AtLeast20",
    "AtLeastOne",
    "Bound",
    "Confidence",
    "Constraint",
    "Correction",
    "Days",
    "Direction",
    "Fraction",
    "Hours",
    "OpenFraction",
    "PsiThreshold",
    "Seed",
    "Severity",
    "Share",
    "SignificanceTest",
    "WindowPeriod",
]

# Field types: pydantic ``Annotated`` types built by ._fields (the project runs no static type checker).
Severity = choice(SEVERITIES)
Correction = choice(CORRECTIONS)
Direction = choice(("both", "lower"))
SignificanceTest = choice(("two_proportion_z",))
Constraint = choice(MITIGATION_CONSTRAINTS)
Fraction = number(0, 1)
OpenFraction = number(0, 1, low_open=True)
Bound = number(0, 1, low_open=True, optional=True)
Share = number(0, 1, low_open=True, optional=True)
Alpha = number(0, 0.5, low_open=True)
Confidence = number(0.5, 0.999)
Hours = number(0, 24 * 365, low_open=True)
PsiThreshold = number(0, 10, low_open=True)
AtLeastOne = integer(1)
AtLeast20 = integer(20)
AtLeast100 = integer(100)
Seed = integer(0)
WindowPeriod = choice(("day", "week", "month"))
Days = number(0, 3650)

"""One evidence rule for every gate: the burden of proof is on the model.

Every check states one of three outcomes:

* ``pass`` — the evidence shows the criterion is met (for an interval: all of it lies inside the bound);
* ``fail`` — the evidence shows it is not (all of the interval lies outside);
* ``insufficient_evidence`` — anything else: too few rows, no labels yet, an interval that straddles
  the bound, a metric that could not be computed. It is **not** a pass: a blocking check with
  insufficient evidence stops promotion until a named approver records a waiver
  (:mod:`clinical_mlops.governance.waivers`).

No evidence at all (an empty list of outcomes) is insufficient evidence, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FAIL",
    "INSUFFICIENT",
    "PASS",
    "STATUSES",
    "Evidence",
    "Status",
    "at_least",
    "at_most",
    "combine",
    "passed",
]

Status = Literal["pass", "fail", "insufficient_evidence"]
PASS: Status = "pass"
FAIL: Status = "fail"
INSUFFICIENT: Status = "insufficient_evidence"
STATUSES: tuple[Status, ...] = (PASS, FAIL, INSUFFICIENT)


@dataclass(frozen=True)
class Evidence:
    """A check's outcome and, in words, why."""

    status: Status
    reason: str

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


def passed(status: str) -> bool:
    """A check passes only on ``pass``: failure and missing evidence alike do not."""
    if status not in STATUSES:
        raise ValueError(f"unknown evidence status {status!r}; expected one of {', '.join(STATUSES)}")
    return status == PASS


def _undefined(*values: float | None) -> bool:
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)


def at_least(lower: float | None, upper: float | None, minimum: float, *, what: str = "the metric") -> Evidence:
    """``what >= minimum`` judged on its interval ``[lower, upper]``."""
    if _undefined(lower, upper):
        return Evidence(INSUFFICIENT, f"{what} has no interval (too few rows or one class only)")
    if lower >= minimum:
        return Evidence(PASS, f"{what} interval [{lower:.3f}, {upper:.3f}] lies at or above {minimum:g}")
    if upper < minimum:
        return Evidence(FAIL, f"{what} interval [{lower:.3f}, {upper:.3f}] lies below {minimum:g}")
    return Evidence(INSUFFICIENT, f"{what} interval [{lower:.3f}, {upper:.3f}] straddles the minimum {minimum:g}")


def at_most(lower: float | None, upper: float | None, maximum: float, *, what: str = "the metric") -> Evidence:
    """``what <= maximum`` judged on its interval ``[lower, upper]``."""
    if _undefined(lower, upper):
        return Evidence(INSUFFICIENT, f"{what} has no interval (too few rows or one class only)")
    if upper <= maximum:
        return Evidence(PASS, f"{what} interval [{lower:.3f}, {upper:.3f}] lies at or below {maximum:g}")
    if lower > maximum:
        return Evidence(FAIL, f"{what} interval [{lower:.3f}, {upper:.3f}] lies above {maximum:g}")
    return Evidence(INSUFFICIENT, f"{what} interval [{lower:.3f}, {upper:.3f}] straddles the maximum {maximum:g}")


def combine(statuses: Iterable[str]) -> Status:
    """Several outcomes as one: any fail fails; else any missing evidence is insufficient; an empty list
    is insufficient evidence; only all-pass passes."""
    seen = list(statuses)
    for status in seen:
        passed(status)  # validates
    if not seen:
        return INSUFFICIENT
    if FAIL in seen:
        return FAIL
    if INSUFFICIENT in seen:
        return INSUFFICIENT
    return PASS

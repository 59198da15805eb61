"""The ``drift``, ``change_control`` and ``monitoring`` sections: drift limits, promotion acceptance, monitoring windows."""

from __future__ import annotations

from pydantic import model_validator

from clinical_mlops.governance.policy._fields import Flag, Names, fail, section
from clinical_mlops.governance.policy._value_types import (
    Alpha,
    AtLeast100,
    Correction,
    Days,
    Fraction,
    OpenFraction,
    PsiThreshold,
    Seed,
    Severity,
    WindowPeriod,
)
from clinical_mlops.governance.policy._vocabulary import BLOCKING_SEVERITIES

__all__ = [
    "DEFAULT_NON_INFERIORITY_MARGIN",
    "AbsoluteAcceptance",
    "Acceptance",
    "ChangeControl",
    "DriftPolicy",
    "MonitoringPolicy",
]


DEFAULT_NON_INFERIORITY_MARGIN = 0.02
"""``change_control.acceptance.fairness_non_inferiority_margin`` when the policy does not set it."""


@section
class DriftPolicy:
    alpha: Alpha
    correction: Correction
    dataset_drift_share: OpenFraction
    psi_threshold: PsiThreshold
    severity: Severity
    evidently_sample_rows: AtLeast100
    evidently_sample_seed: Seed

    @property
    def blocking(self) -> bool:
        return self.severity in BLOCKING_SEVERITIES


@section
class Acceptance:
    max_auroc_drop: Fraction
    no_new_fairness_failures: Flag
    fairness_non_inferiority_margin: Fraction = DEFAULT_NON_INFERIORITY_MARGIN
    """A challenger sharing the champion's blocking fairness failure may be promoted only if its gap is not
    worse by more than this (paired interval of challenger gap − champion gap)."""


@section
class AbsoluteAcceptance:
    min_auroc: Fraction
    max_brier: OpenFraction


@section
class ChangeControl:
    allowed_modifications: Names
    requires_new_review: Names
    acceptance: Acceptance
    absolute_acceptance: AbsoluteAcceptance

    @model_validator(mode="after")
    def _allowed_or_reviewed_not_both(self) -> ChangeControl:
        both = set(self.allowed_modifications) & set(self.requires_new_review)
        if both:
            raise fail(f"lists modifications as both allowed and requiring review: {sorted(both)}")
        return self


@section
class MonitoringPolicy:
    """Production monitoring windows: the service's log is cut per ``window_period`` (batch scoring per
    extract), an outcome counts as known ``label_delay_days`` after its prediction, and a group whose held-out
    calibration error (CITL or ECE interval) lies beyond ``max_calibration_error`` gets no estimate."""

    window_period: WindowPeriod = "week"
    label_delay_days: Days = 30.0
    max_calibration_error: OpenFraction = 0.05

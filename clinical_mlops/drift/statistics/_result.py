"""Drift settings, per-statistic results and the decision: significant after correction, material by PSI."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from clinical_mlops.core.multiple_testing import adjust_p_values

__all__ = ["DriftResult", "DriftSettings", "FeatureDrift", "decide", "with_prediction"]


@dataclass(frozen=True)
class DriftSettings:
    """The drift section of the governance policy, as the statistics need it."""

    alpha: float = 0.05
    correction: str = "benjamini_hochberg"
    dataset_drift_share: float = 0.30
    psi_threshold: float = 0.20
    severity: str = "warn"
    sample_rows: int = 20_000
    sample_seed: int = 17

    @classmethod
    def from_policy(cls, drift_policy) -> DriftSettings:
        """From ``Policy.drift`` (``clinical_mlops.governance.policy.DriftPolicy``)."""
        return cls(
            alpha=float(drift_policy.alpha),
            correction=str(drift_policy.correction),
            dataset_drift_share=float(drift_policy.dataset_drift_share),
            psi_threshold=float(drift_policy.psi_threshold),
            severity=str(drift_policy.severity),
            sample_rows=int(drift_policy.evidently_sample_rows),
            sample_seed=int(drift_policy.evidently_sample_seed),
        )


@dataclass(frozen=True)
class FeatureDrift:
    """One drift statistic: a feature, the model's score, or the label."""

    name: str
    kind: str  # feature | prediction | target
    feature_type: str  # numeric | categorical
    test: str  # ks | chi_square
    statistic: float
    p_value: float
    p_value_adjusted: float
    psi: float
    significant: bool
    drifted: bool
    material: bool
    n_reference: int
    n_current: int
    reference_value: float | None = None
    """Numeric: reference mean. Categorical: reference share of ``summary``'s category."""
    current_value: float | None = None
    summary: str = ""
    """Human-readable aggregate, e.g. ``mean 4.31 → 5.02`` or ``share of 'X' 0.19 → 0.44``."""

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class DriftResult:
    """Per-feature drift plus the dataset-level verdict under the settings used."""

    features: tuple[FeatureDrift, ...]
    settings: DriftSettings
    n_reference: int
    n_current: int
    prediction: FeatureDrift | None = None
    target: FeatureDrift | None = None
    prediction_alert_rates: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def features_tested(self) -> int:
        return len(self.features)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    @property
    def material_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.material)

    @property
    def drift_share(self) -> float:
        return len(self.drifted_features) / self.features_tested if self.features_tested else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.features_tested > 0 and self.drift_share >= self.settings.dataset_drift_share

    @property
    def prediction_drift(self) -> bool:
        return bool(self.prediction is not None and self.prediction.drifted)

    @property
    def target_drift(self) -> bool:
        return bool(self.target is not None and self.target.drifted)

    def ranked(self) -> list[FeatureDrift]:
        """Features, most shifted first (drifted, then by PSI)."""
        return sorted(self.features, key=lambda f: (not f.drifted, -(f.psi if f.psi == f.psi else -1.0)))


def decide(raw: list[dict], settings: DriftSettings, *, adjust: bool) -> list[FeatureDrift]:
    """Judge raw statistics: p-values corrected across the family (``adjust``), then alpha (drifted) and PSI (material)."""
    p = [r["p_value"] for r in raw]
    adjusted = adjust_p_values(p, settings.correction) if adjust else np.asarray(p, dtype=np.float64)
    out = []
    for r, q in zip(raw, adjusted):
        significant = bool(q == q and q < settings.alpha)
        material = bool(r["psi"] == r["psi"] and r["psi"] >= settings.psi_threshold)
        out.append(FeatureDrift(**r, p_value_adjusted=float(q), significant=significant,
                                drifted=significant, material=material))
    return out


def with_prediction(result: DriftResult, prediction: FeatureDrift, alert_rates: tuple[float, float]) -> DriftResult:
    """The same result with prediction drift attached."""
    return DriftResult(features=result.features, settings=result.settings, n_reference=result.n_reference,
                       n_current=result.n_current, prediction=prediction, target=result.target,
                       prediction_alert_rates=alert_rates, extra=result.extra)

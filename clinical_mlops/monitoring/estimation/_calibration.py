"""The calibration gate: is the model calibrated on its held-out split, overall and per group?

Confidence-based estimation reads a score as the probability of the outcome; it is only as good
as that reading. Before a window is estimated, the model version that served it is checked on
its held-out split (``ml.predictions``, ``split = 'test'``), overall and per group of every slice
(attributes and intersections):

* **calibration-in-the-large** (CITL): mean score minus observed rate;
* **ECE**: expected calibration error over 10 **equal-frequency** bins (each bin a tenth of the
  group's rows by score; the evaluation tables use equal-width bins, which leave the upper bins
  of a readmission model nearly empty);
* each with a percentile bootstrap interval (rows resampled within the group, seeded).

A group is **refused** when it has fewer than ``min_group_size`` held-out rows, or when the
evidence shows it miscalibrated beyond ``max_calibration_error`` (the evidence rule: as a fairness
gap must be shown to fail):

* CITL: its bootstrap interval lies wholly beyond ``±bound``;
* ECE: the observed ECE exceeds the bound *plus its noise floor*, the 97.5th percentile of the ECE a
  perfectly calibrated model would show on the same scores (labels drawn ~ Bernoulli(score)). ECE is an
  absolute value, biased upwards: 200 calibrated rows in 10 bins show an ECE near 0.07 from noise alone,
  and its bootstrap interval (reported, biased further) would refuse most calibrated small groups.

A refused group gets no estimate, only the reason.

``max_calibration_error`` is the policy's ``monitoring.max_calibration_error``; without a policy,
:data:`MAX_CALIBRATION_ERROR` (0.05), that section's default (:mod:`clinical_mlops.monitoring.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import settings
from clinical_mlops.monitoring.estimation._slices import group_slices

__all__ = [
    "CALIBRATION_BINS",
    "MAX_CALIBRATION_ERROR",
    "CalibrationCheck",
    "CalibrationGate",
    "calibration_gate",
    "ece_equal_frequency",
    "heldout_rows",
]

MAX_CALIBRATION_ERROR = settings.MAX_CALIBRATION_ERROR
"""Bound on |CITL| and ECE of a group on the held-out split beyond which its estimate is refused
(:data:`clinical_mlops.monitoring.settings.MAX_CALIBRATION_ERROR`, the policy's default)."""
CALIBRATION_BINS = 10


def ece_equal_frequency(y: np.ndarray, s: np.ndarray, n_bins: int = CALIBRATION_BINS) -> np.ndarray:
    """ECE over ``n_bins`` equal-frequency score bins; ``y`` and ``s`` may be (n,) or (B, n) (one per row)."""
    y2, s2 = np.atleast_2d(np.asarray(y, dtype=float)), np.atleast_2d(np.asarray(s, dtype=float))
    n = s2.shape[1]
    if n == 0:
        return np.full(y2.shape[0], np.nan) if np.ndim(y) > 1 else np.float64(np.nan)
    order = np.argsort(s2, axis=1, kind="stable")
    ys, ss = np.take_along_axis(y2, order, axis=1), np.take_along_axis(s2, order, axis=1)
    starts = np.unique((np.arange(min(n_bins, n)) * n) // min(n_bins, n))
    gap = np.abs(np.add.reduceat(ss, starts, axis=1) - np.add.reduceat(ys, starts, axis=1))
    ece = gap.sum(axis=1) / n  # sum over bins of n_b/n * |mean s_b - mean y_b|
    return ece if np.ndim(y) > 1 else np.float64(ece[0])


@dataclass(frozen=True)
class CalibrationCheck:
    """One group's calibration on the held-out split, and whether its estimate is refused (and why)."""

    attribute: str
    group: str
    n: int
    citl: float
    citl_lower: float
    citl_upper: float
    ece: float
    ece_lower: float
    ece_upper: float
    ece_noise_floor: float           # 97.5th percentile of the ECE of a calibrated model on these scores
    refused: bool
    reason: str


@dataclass(frozen=True)
class CalibrationGate:
    """The gate of one model version: a check per (slice, group); ``refusal`` says why a group is refused."""

    model_name: str
    model_version: str
    n: int
    bound: float
    checks: tuple[CalibrationCheck, ...]

    def check(self, attribute: str, group: str) -> CalibrationCheck | None:
        for c in self.checks:
            if c.attribute == attribute and c.group == group:
                return c
        return None

    def refusal(self, attribute: str, group: str) -> str | None:
        """Why the group's estimate is refused (``None``: it may be estimated). A group absent from the
        held-out split is refused."""
        c = self.check(attribute, group)
        if c is None:
            return f"group {group} of {attribute} is absent from the held-out split: its calibration is unknown"
        return c.reason if c.refused else None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.__dict__ for c in self.checks])


def heldout_rows(con: duckdb.DuckDBPyConnection, spec: CohortSpec, model_name: str, model_version: str
                 ) -> pd.DataFrame:
    """The model version's held-out predictions (label, score) with the cohort's sensitive attributes."""
    attributes = list(dict.fromkeys(spec.sensitive_attributes))
    join, select = "", ""
    if attributes and table_exists(con, spec.features_table):
        join = (f"LEFT JOIN (SELECT encounter_id, {', '.join(f'any_value({a}) AS {a}' for a in attributes)} "
                f"FROM {spec.features_table} GROUP BY encounter_id) f USING (encounter_id)")
        select = "".join(f", CAST(f.{a} AS VARCHAR) AS {a}" for a in attributes)
    return con.execute(
        f"""SELECT p.label, p.score{select} FROM ml.predictions p {join}
            WHERE p.cohort = ? AND p.model_name = ? AND p.model_version = ? AND p.split = 'test'
            ORDER BY p.encounter_id""",
        [spec.name, model_name, str(model_version)],
    ).df()


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _check(name: str, group: str, y: np.ndarray, s: np.ndarray, *, bound: float, min_group_size: int,
           n_boot: int, confidence: float, rng: np.random.Generator) -> CalibrationCheck:
    n = len(y)
    citl = float(s.mean() - y.mean()) if n else np.nan
    ece = float(ece_equal_frequency(y, s)) if n else np.nan
    if n < max(min_group_size, 2):
        return CalibrationCheck(name, group, n, citl, np.nan, np.nan, ece, np.nan, np.nan, np.nan, True,
                                f"group {group} of {name} has {n} held-out rows (fewer than {min_group_size}): "
                                "its calibration cannot be shown, so its performance is not estimated")
    idx = rng.integers(0, n, size=(n_boot, n))
    yb, sb = y[idx], s[idx]
    citl_lo, citl_hi = _interval(sb.mean(axis=1) - yb.mean(axis=1), confidence)
    ece_lo, ece_hi = _interval(ece_equal_frequency(yb, sb), confidence)
    null = ece_equal_frequency((rng.random((n_boot, n)) < s).astype(float), np.broadcast_to(s, (n_boot, n)))
    floor = float(np.quantile(null, 0.975))
    reasons = []
    if citl_lo > bound or citl_hi < -bound:
        reasons.append(f"CITL {citl:+.2f} [{citl_lo:+.2f}, {citl_hi:+.2f}] beyond {bound:g}")
    if ece - floor > bound:
        reasons.append(f"ECE {ece:.2f} [{ece_lo:.2f}, {ece_hi:.2f}] beyond {bound:g} over its noise floor {floor:.2f}")
    reason = (f"group {group} of {name} miscalibrated on the held-out split: {'; '.join(reasons)}" if reasons
              else f"group {group} of {name} calibrated within {bound:g} on the held-out split (n={n})")
    return CalibrationCheck(name, group, n, citl, citl_lo, citl_hi, ece, ece_lo, ece_hi, floor, bool(reasons),
                            reason)


def calibration_gate(
    heldout: pd.DataFrame,
    policy,
    *,
    model_name: str = "",
    model_version: str = "",
    bound: float = MAX_CALIBRATION_ERROR,
    n_boot: int | None = None,
    seed: int | None = None,
) -> CalibrationGate:
    """Check calibration of held-out rows (``label``, ``score``, attribute columns) overall and per group."""
    fp = policy.fairness
    n_boot = int(n_boot or fp.n_bootstrap)
    rng = np.random.default_rng(fp.bootstrap_seed if seed is None else seed)
    y = heldout["label"].to_numpy(dtype=float)
    s = heldout["score"].to_numpy(dtype=float)
    checks = []
    for sl in group_slices(heldout, policy):
        for g, group in enumerate(sl.labels):
            mask = sl.codes == g
            checks.append(_check(sl.name, group, y[mask], s[mask], bound=bound, min_group_size=fp.min_group_size,
                                 n_boot=n_boot, confidence=fp.confidence, rng=rng))
    return CalibrationGate(model_name, str(model_version), len(heldout), bound, tuple(checks))

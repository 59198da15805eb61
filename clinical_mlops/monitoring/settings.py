"""Production monitoring's defaults, each defined once.

The monitoring assets' run configs (``clinical_mlops/defs/monitoring``) default to these, and so do the
functions of :mod:`.production`, :mod:`.estimation` and :mod:`.steps` when called without them.

What the governance policy decides is read from the policy: the label delay, the window period of
``production_windows`` and the calibration bound are its ``monitoring`` section. :data:`LABEL_DELAY_DAYS` and
:data:`MAX_CALIBRATION_ERROR` are that section's own defaults (``MonitoringPolicy``), used only where no
policy is given. The rest are not policy: how much production data each check looks at and needs.
"""

from __future__ import annotations

from clinical_mlops.governance.policy import MonitoringPolicy

__all__ = [
    "AUROC_TOLERANCE",
    "ESTIMATION_N_SIMULATIONS",
    "ESTIMATION_SEED",
    "LABEL_DELAY_DAYS",
    "MAX_CALIBRATION_ERROR",
    "MAX_MISMATCH_RATE",
    "MIN_LABELLED",
    "MIN_SERVED",
    "PERFORMANCE_N_BOOTSTRAP",
    "PERFORMANCE_PERIOD",
    "PRODUCTION_WINDOW_DAYS",
    "SKEW_WINDOW_DAYS",
]

_POLICY_DEFAULTS = MonitoringPolicy()

LABEL_DELAY_DAYS: float = float(_POLICY_DEFAULTS.label_delay_days)
"""Days after a prediction before its outcome counts as known without a policy (30-day readmission: 30)."""
MAX_CALIBRATION_ERROR: float = float(_POLICY_DEFAULTS.max_calibration_error)
"""Largest held-out calibration error (CITL or ECE) of a group that still gets an estimate, without a policy."""

# production_monitoring: performance over time and fairness on labelled production predictions
PRODUCTION_WINDOW_DAYS: float = 90.0
"""Days of labelled production predictions judged (performance and fairness)."""
PERFORMANCE_PERIOD: str = "week"
"""Period of the performance-over-time table (``monitoring.production_metrics``)."""
MIN_LABELLED: int = 200
"""Fewer labelled outcomes in the window is insufficient evidence."""
AUROC_TOLERANCE: float = 0.05
"""Fail when the production AUROC interval lies wholly below held-out AUROC minus this."""
PERFORMANCE_N_BOOTSTRAP: int = 200
"""Bootstrap resamples of the production metrics' (and fairness gaps') intervals."""

# training_serving_skew
SKEW_WINDOW_DAYS: float = 30.0
"""Days of served predictions compared with the training features."""
MIN_SERVED: int = 100
"""Fewer served encounters is insufficient evidence."""
MAX_MISMATCH_RATE: float = 0.01
"""Largest share of encounters (seen served and in the warehouse) allowed a different served value."""

# production_windows: estimation before the labels
ESTIMATION_N_SIMULATIONS: int = 400
"""Monte Carlo label draws behind each estimated band (0: point estimates only)."""
ESTIMATION_SEED: int = 20261115
"""Seed of those draws."""

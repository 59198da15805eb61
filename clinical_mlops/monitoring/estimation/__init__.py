"""Performance estimated before the labels arrive, per subgroup; realised once they do; side by side.

Clinical labels arrive late (a 30-day readmission is known 30 days after discharge, at the earliest),
so a fairness problem in production would stay invisible for a month. This package closes the gap:

* **windows** (:func:`windows`): a cohort's production predictions per extract (batch scoring) or per
  period (the service's log), one model version each, with their label delay and when labels are due;
* **calibration gate** (:func:`calibration_gate`): the served model version's calibration on its held-out
  split, overall and per group (CITL and equal-frequency ECE with bootstrap intervals); a group shown
  miscalibrated beyond :data:`MAX_CALIBRATION_ERROR`, or too small to tell, is refused, with the reason;
* **confidence-based performance estimation** (:func:`estimate_window`): the expected confusion matrix
  of every group from the calibrated scores, expected AUROC, recall, precision, Brier, and Monte Carlo
  bands from shared label draws, hence a paired band on each group's expected recall gap;
* **realised metrics** (:func:`realised_metrics`) once labels are joined, with bootstrap intervals and
  the offline gate's fairness verdicts;
* **side by side** (:func:`monitor_windows`): both tables (``monitoring.window_metrics``,
  ``monitoring.estimation_errors``), the estimation error per window and the early warning.

Everything stored or returned is aggregate; no row leaves the warehouse.
"""

from clinical_mlops.monitoring.estimation._calibration import (
    CALIBRATION_BINS,
    MAX_CALIBRATION_ERROR,
    CalibrationCheck,
    CalibrationGate,
    calibration_gate,
    ece_equal_frequency,
    heldout_rows,
)
from clinical_mlops.monitoring.estimation._cbpe import (
    ESTIMATE_COLUMNS,
    ESTIMATED_METRICS,
    estimate_window,
    expected_auroc,
    gap_breaches,
)
from clinical_mlops.monitoring.estimation._compare import (
    COMPARED_METRICS,
    WindowResult,
    WindowsOutcome,
    compare,
    monitor_windows,
)
from clinical_mlops.monitoring.estimation._realised import REALISED_COLUMNS, REALISED_METRICS, realised_metrics
from clinical_mlops.monitoring.estimation._slices import GroupSlice, group_columns, group_slices
from clinical_mlops.monitoring.estimation._tables import ESTIMATION_ERRORS_DDL, WINDOW_METRICS_DDL, ensure_tables
from clinical_mlops.monitoring.estimation._windows import PERIODS, Window, windows

__all__ = [
    "CALIBRATION_BINS",
    "COMPARED_METRICS",
    "ESTIMATED_METRICS",
    "ESTIMATE_COLUMNS",
    "ESTIMATION_ERRORS_DDL",
    "MAX_CALIBRATION_ERROR",
    "PERIODS",
    "REALISED_COLUMNS",
    "REALISED_METRICS",
    "WINDOW_METRICS_DDL",
    "CalibrationCheck",
    "CalibrationGate",
    "GroupSlice",
    "Window",
    "WindowResult",
    "WindowsOutcome",
    "calibration_gate",
    "compare",
    "ece_equal_frequency",
    "ensure_tables",
    "estimate_window",
    "expected_auroc",
    "gap_breaches",
    "group_columns",
    "group_slices",
    "heldout_rows",
    "monitor_windows",
    "realised_metrics",
    "windows",
]

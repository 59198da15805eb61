"""The monitoring dashboard people open: Evidently's UI over the monitoring windows, and a static page beside it.

:func:`publish` reads the cohort's windows from the warehouse (``monitoring.window_metrics``,
``monitoring.incidents``, ``monitoring.drift_runs``) and writes

* an **Evidently local workspace** (``data/evidently/``, served by ``evidently ui`` from ``make ui``): one project
  per cohort, one snapshot per window timestamped at the window's end, panels over time (score distribution and
  drift share; estimated and realised AUROC, recall, calibration; recall gap and demographic-parity ratio per group
  of every required sensitive attribute with the policy's bound as a constant series; incidents) — :mod:`._evidently`;
* a **static HTML page** (``data/reports/<cohort>/monitoring/dashboard.html``) with what Evidently's panels cannot
  draw: per-window, per-group intervals (estimated band beside realised CI), the bounds, windows awaiting labels
  marked "estimated only", refused groups with their reason, incidents listed — :mod:`._static`.

Both are idempotent: publishing again replaces a recomputed window's snapshot and rewrites the panels whole.
Aggregates only."""

from clinical_mlops.monitoring.dashboard._evidently import PROJECT_PREFIX, column_name
from clinical_mlops.monitoring.dashboard._figures import Bounds, WindowFigures, bounds, window_figures
from clinical_mlops.monitoring.dashboard._publish import DashboardResult, publish

__all__ = ["PROJECT_PREFIX", "Bounds", "DashboardResult", "WindowFigures", "bounds", "column_name", "publish",
           "window_figures"]

"""Evidently's own UI over the monitoring windows: a local workspace, one project per cohort, one snapshot per
window (timestamped at the window's end), and the project's dashboard panels, all idempotent.

How the figures get into Evidently: each window's aggregates (estimated and realised AUROC, recall, calibration,
recall gap and demographic-parity ratio per group, score quantiles, drift share, incidents, the policy's bounds)
become the columns of a one-row frame, and an Evidently ``Report`` of ``MeanValue`` metrics over that frame is the
window's snapshot: the mean of one value is the value, and ``MeanValue`` is a built-in metric, so the stock
``evidently ui`` process plots the series without a custom metric class having to be importable by it.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pandas as pd

from clinical_mlops.monitoring.dashboard._figures import Bounds, WindowFigures

__all__ = ["PROJECT_PREFIX", "column_name", "open_workspace", "project_for", "publish_snapshots", "set_dashboard",
           "snapshot_frame"]

PROJECT_PREFIX = "clinical_mlops · "
_NS = uuid.UUID("5d1f3c2e-0b7a-4c55-9a59-6f0d6f1e2a15")
TABS = ("Performance", "Fairness", "Incidents")
OVERALL_METRICS = ("auroc", "recall", "precision", "brier", "ece", "calibration_in_the_large")
GROUP_METRICS = ("recall_gap", "demographic_parity_ratio")
"""Only the figures the panels plot become snapshot metrics (each ``MeanValue`` also renders a widget)."""


def column_name(kind: str, metric: str, attribute: str = "overall", group: str = "all") -> str:
    """The snapshot column (and ``MeanValue`` label) of one figure."""
    return f"{kind}|{metric}|{attribute}|{group}"


def open_workspace(path: Path):
    from evidently.ui.workspace import Workspace

    path.mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def project_for(ws, cohort: str):
    """The cohort's project, found by name or created (never two)."""
    from evidently.sdk.models import ProjectModel

    name = PROJECT_PREFIX + cohort
    found = ws.search_project(name)
    if found:
        return found[0]
    project = ws.add_project(ProjectModel(name=name, description=f"Monitoring windows of cohort {cohort}: "
                                          "estimated before the labels, realised after, fairness per group."))
    return project


def snapshot_frame(f: WindowFigures, attributes: list[str], b: Bounds) -> dict[str, float]:
    """The window's figures as ``{column: value}`` (aggregates only; missing figures left out)."""
    values: dict[str, float] = {}
    m = f.metrics
    wanted = m[((m["attribute"] == "overall") & m["metric"].isin(OVERALL_METRICS))
               | (m["attribute"].isin(attributes) & m["metric"].isin(GROUP_METRICS))]
    for r in wanted.itertuples(index=False):
        if r.estimate is not None and not pd.isna(r.estimate):
            values[column_name(r.kind, r.metric, r.attribute, r.group)] = float(r.estimate)
    for q, v in f.score_quantiles.items():
        values[column_name("score", q)] = v
    if f.drift_share is not None:
        values[column_name("drift", "drift_share")] = f.drift_share
    values[column_name("incidents", "open")] = float(f.incidents_open)
    values[column_name("incidents", "total")] = float(f.incidents_total)
    values[column_name("window", "estimated_only")] = float(f.status == "estimated_only")
    values[column_name("window", "n")] = float(f.n)
    values[column_name("window", "n_labelled")] = float(f.n_labelled)
    if b.recall_gap_lines:
        values[column_name("policy", "recall_gap_max")] = float(b.recall_gap_lines[0])
    if b.dp_ratio_min is not None:
        values[column_name("policy", "demographic_parity_ratio_min")] = float(b.dp_ratio_min)
    return {k: v for k, v in values.items() if math.isfinite(v)}


def _values_sha256(f: WindowFigures, values: dict[str, float]) -> str:
    """What a window's snapshot shows, hashed: an unchanged window is not rendered again."""
    import hashlib
    import json

    shown = {"values": values, "status": f.status, "model_version": f.model_version, "end": str(f.end)}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()


def _snapshot(f: WindowFigures, values: dict[str, float], cohort: str):
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    columns = sorted(values)
    frame = pd.DataFrame({c: [values[c]] for c in columns})
    data = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=columns))
    report = Report([MeanValue(column=c) for c in columns])
    return report.run(data, None, timestamp=f.end, name=f.window_id,
                      metadata={"cohort": cohort, "window_id": f.window_id, "status": f.status,
                                "model_version": f.model_version, "values_sha256": _values_sha256(f, values)},
                      tags=[f.status])


def publish_snapshots(ws, project, figures: list[WindowFigures], attributes: list[str], b: Bounds,
                      cohort: str) -> int:
    """One snapshot per window; a window whose figures changed since it was published is replaced (its old
    snapshot deleted), an unchanged one is kept as it is."""
    values = {f.window_id: snapshot_frame(f, attributes, b) for f in figures}
    wanted = {f.window_id: _values_sha256(f, values[f.window_id]) for f in figures}
    kept: set[str] = set()
    for snapshot_id in list(ws.list_runs(project.id)):
        run = ws.get_run(project.id, snapshot_id)
        window = run.metadata.get("window_id") if run is not None else None
        if window not in wanted:
            continue
        if run.metadata.get("values_sha256") == wanted[window] and window not in kept:
            kept.add(window)
        else:
            ws.delete_run(project.id, snapshot_id)
    for f in figures:
        if f.window_id not in kept:
            ws.add_run(project.id, _snapshot(f, values[f.window_id], cohort))
    return len(ws.list_runs(project.id))


def _panel(title: str, series: list[tuple[str, str]], *, subtitle: str, plot: str = "line", size: str = "half",
           **params):
    from evidently.sdk.models import DashboardPanelPlot, PanelMetric

    return DashboardPanelPlot(
        id=uuid.uuid5(_NS, title), title=title, subtitle=subtitle, size=size,
        values=[PanelMetric(legend=legend, metric="MeanValue", metric_labels={"column": col})
                for legend, col in series],
        plot_params={"plot_type": plot, **params})


def _groups(figures: list[WindowFigures], metric: str, attribute: str) -> list[str]:
    seen: dict[str, None] = {}
    for f in figures:
        m = f.metrics
        for g in m[(m["metric"] == metric) & (m["attribute"] == attribute)]["group"]:
            seen[str(g)] = None
    return list(seen)


def panels(figures: list[WindowFigures], attributes: list[str], b: Bounds) -> dict[str, list]:
    """The dashboard's panels per tab (ids derived from the titles, so rebuilding them changes nothing)."""
    def both(metric: str, attribute: str = "overall", group: str = "all", label: str = "") -> list[tuple[str, str]]:
        label = label or metric
        return [(f"{label} estimated", column_name("estimated", metric, attribute, group)),
                (f"{label} realised", column_name("realised", metric, attribute, group))]

    gap = "none" if b.recall_gap_max is None else f"{b.recall_gap_lines[0]:+g} ({b.recall_gap_direction})"
    dp = "none" if b.dp_ratio_min is None else f"{b.dp_ratio_min:g}"
    per_window = "one point per monitoring window, at the window's end"
    performance = [
        _panel("AUROC: estimated and realised", both("auroc", label="AUROC"), subtitle=per_window),
        _panel("Recall at the operating threshold: estimated and realised", both("recall", label="recall"),
               subtitle=per_window),
        _panel("Calibration", [("ECE realised", column_name("realised", "ece")),
                               ("calibration-in-the-large realised",
                                column_name("realised", "calibration_in_the_large")),
                               *both("brier", label="Brier")],
               subtitle="realised once labelled; Brier also expected from the scores before the labels"),
        _panel("Score distribution and drift share",
               [(f"score {q}", column_name("score", q)) for q in ("p10", "p50", "p90", "mean")]
               + [("drift share", column_name("drift", "drift_share"))],
               subtitle="score quantiles per window; drift share of the window's extract (monitoring.drift_runs)"),
    ]
    fairness = []
    for attribute in attributes:
        gap_series = [(f"policy bound {gap}", column_name("policy", "recall_gap_max"))]
        for group in _groups(figures, "recall_gap", attribute):
            gap_series += both("recall_gap", attribute, group, label=group)
        fairness.append(_panel(f"Recall gap by {attribute}", gap_series, size="full",
                               subtitle=f"group's recall minus the reference group's; policy bound {gap} (drawn as a "
                               "constant series); per-group intervals on the static dashboard page"))
        dp_series = [(f"policy bound (min {dp})", column_name("policy", "demographic_parity_ratio_min"))]
        for group in _groups(figures, "demographic_parity_ratio", attribute):
            dp_series += both("demographic_parity_ratio", attribute, group, label=group)
        fairness.append(_panel(f"Demographic-parity ratio by {attribute}", dp_series, size="full",
                               subtitle=f"selection-rate ratio to the reference group; policy bound {dp}"))
    incidents = [
        _panel("Open incidents", [("open incidents", column_name("incidents", "open"))], plot="counter",
               subtitle="incidents still open, summed over the windows", aggregation="sum", size="half"),
        _panel("Incidents per window", [("open", column_name("incidents", "open")),
                                        ("opened (any status)", column_name("incidents", "total")),
                                        ("estimated only (awaiting labels)",
                                         column_name("window", "estimated_only"))],
               plot="bar", subtitle="early-warning and realised incidents naming the window", is_stacked=False),
    ]
    return {"Performance": performance, "Fairness": fairness, "Incidents": incidents}


def set_dashboard(ws, project, figures: list[WindowFigures], attributes: list[str], b: Bounds) -> int:
    """Write the project's dashboard (tabs and panels) whole, so re-running replaces rather than duplicates."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    tabs = panels(figures, attributes, b)
    model = DashboardModel(
        tabs=[DashboardTabModel(id=uuid.uuid5(_NS, f"tab:{t}"), title=t, panels=[p.id for p in ps])
              for t, ps in tabs.items()],
        panels=[p for ps in tabs.values() for p in ps])
    ws.save_dashboard(project.id, model)
    return len(model.panels)

"""``publish``: both dashboards of one cohort from the warehouse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import settings
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import estimation as est
from clinical_mlops.monitoring.dashboard import _evidently, _static
from clinical_mlops.monitoring.dashboard._figures import bounds, incidents, window_figures

__all__ = ["DashboardResult", "publish"]


@dataclass(frozen=True)
class DashboardResult:
    cohort: str
    workspace_dir: Path
    project_id: str | None
    project_name: str
    snapshots: int          # snapshots in the cohort's project after publishing
    windows: int            # windows published now
    panels: int
    page_path: Path


def publish(con: duckdb.DuckDBPyConnection, spec: CohortSpec, outcome: est.WindowsOutcome | None = None, *,
            policy=None, workspace_dir: Path | None = None, reports_dir: Path | None = None) -> DashboardResult:
    """Publish the cohort's monitoring windows to its Evidently project and its static dashboard page."""
    from clinical_mlops.governance.policy import for_cohort, load_policy

    settings.switch_off_telemetry()
    paths = settings.default_paths()
    workspace_dir = Path(workspace_dir or paths.data_dir / "evidently")
    reports_dir = Path(reports_dir or paths.reports_dir)
    policy = for_cohort(policy or load_policy(), spec)
    limits = bounds(policy)
    attributes = list(dict.fromkeys(spec.sensitive_attributes))
    figures = window_figures(con, spec, outcome)
    ws = _evidently.open_workspace(workspace_dir)
    project = _evidently.project_for(ws, spec.name)
    snapshots = _evidently.publish_snapshots(ws, project, figures, attributes, limits, spec.name)
    n_panels = _evidently.set_dashboard(ws, project, figures, attributes, limits)
    page_path = reports_dir / spec.name / "monitoring" / "dashboard.html"
    page_path.parent.mkdir(parents=True, exist_ok=True)
    page_path.write_text(_static.render_page(spec.name, figures, attributes, limits, incidents(con, spec.name),
                                             project.name), encoding="utf-8")
    return DashboardResult(cohort=spec.name, workspace_dir=workspace_dir, project_id=str(project.id),
                           project_name=project.name, snapshots=snapshots, windows=len(figures), panels=n_panels,
                           page_path=page_path)

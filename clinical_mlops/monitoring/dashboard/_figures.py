"""What both dashboards show, read from the warehouse: one aggregate record per window (no rows, no ids)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import estimation as est

__all__ = ["Bounds", "WindowFigures", "bounds", "incidents", "window_figures"]


@dataclass(frozen=True)
class Bounds:
    """The policy's limits the dashboards draw."""

    recall_gap_max: float | None
    dp_ratio_min: float | None
    recall_gap_direction: str = "lower"

    @property
    def recall_gap_lines(self) -> tuple[float, ...]:
        """Where the recall-gap bound is drawn (gap = group minus reference: ``lower`` binds below zero)."""
        if self.recall_gap_max is None:
            return ()
        return (-self.recall_gap_max,) if self.recall_gap_direction == "lower" else (
            -self.recall_gap_max, self.recall_gap_max)


def bounds(policy) -> Bounds:
    rules = {m.name: m for m in policy.fairness.metrics}
    gap, dp = rules.get("recall_gap"), rules.get("demographic_parity_ratio")
    return Bounds(recall_gap_max=None if gap is None else gap.max_difference,
                  dp_ratio_min=None if dp is None else dp.min_ratio,
                  recall_gap_direction="lower" if gap is None else str(gap.direction))


@dataclass
class WindowFigures:
    """One window's aggregates: its timing, its long table of figures, score quantiles, drift, incidents."""

    window_id: str
    start: datetime
    end: datetime
    labels_due_at: datetime | None
    model_version: str
    n: int
    n_labelled: int
    status: str                                   # estimated_only | partly_labelled | labelled
    metrics: pd.DataFrame                         # kind, attribute, group, metric, estimate, lower, upper, status, reason
    score_quantiles: dict[str, float] = field(default_factory=dict)
    drift_share: float | None = None
    incidents_open: int = 0
    incidents_total: int = 0

    def value(self, kind: str, metric: str, attribute: str = "overall", group: str = "all") -> float | None:
        m = self.metrics
        hit = m[(m["kind"] == kind) & (m["metric"] == metric) & (m["attribute"] == attribute) & (m["group"] == group)]
        if hit.empty or pd.isna(hit.iloc[0]["estimate"]):
            return None
        return float(hit.iloc[0]["estimate"])


def incidents(con: duckdb.DuckDBPyConnection, cohort: str) -> pd.DataFrame:
    """The cohort's incidents (aggregate fields only: when, severity, check, status)."""
    cols = ["opened_at", "severity", "check", "status", "due_by"]
    if not table_exists(con, "monitoring.incidents"):
        return pd.DataFrame(columns=cols)
    return con.execute('SELECT opened_at, severity, "check", status, due_by FROM monitoring.incidents '
                       "WHERE cohort = ? ORDER BY opened_at", [cohort]).df()


def _drift(con: duckdb.DuckDBPyConnection, cohort: str) -> dict[str, float]:
    if not table_exists(con, "monitoring.drift_runs"):
        return {}
    rows = con.execute("SELECT extract_id, drift_share FROM monitoring.drift_runs WHERE cohort = ? "
                       "ORDER BY computed_at", [cohort]).fetchall()
    return {str(x): float(s) for x, s in rows if s is not None}


def window_figures(con: duckdb.DuckDBPyConnection, spec: CohortSpec,
                   outcome: est.WindowsOutcome | None = None) -> list[WindowFigures]:
    """Every window of the cohort in ``monitoring.window_metrics``, oldest first, with its timing (from
    ``outcome`` when given, else the windows read again from the warehouse)."""
    if not table_exists(con, "monitoring.window_metrics"):
        return []
    table = con.execute(
        """SELECT window_id, model_version, kind, attribute, "group", n, metric, estimate, lower, upper, status,
                  reason, computed_at FROM monitoring.window_metrics WHERE cohort = ?""", [spec.name]).df()
    if table.empty:
        return []
    windows = [r.window for r in outcome.windows] if outcome is not None else est.windows(con, spec)
    by_id = {w.window_id: w for w in windows}
    drift = _drift(con, spec.name)
    found = incidents(con, spec.name)
    out: list[WindowFigures] = []
    for window_id, part in table.groupby("window_id", sort=False):
        w = by_id.get(window_id)
        computed = pd.Timestamp(part["computed_at"].max()).to_pydatetime()
        realised = part[part["kind"] == "realised"]
        overall_n = part[(part["kind"] == "estimated") & (part["attribute"] == "overall")]["n"]
        n = int(w.n) if w is not None else int(overall_n.max() if len(overall_n) else 0)
        labelled_n = realised[realised["attribute"] == "overall"]["n"]
        n_labelled = int(w.n_labelled) if w is not None else int(labelled_n.max() if len(labelled_n) else 0)
        status = "estimated_only" if n_labelled == 0 else ("labelled" if n_labelled >= n else "partly_labelled")
        quantiles: dict[str, float] = {}
        if w is not None and len(w.rows):
            s = w.rows["score"].to_numpy(dtype=float)
            quantiles = {"mean": float(np.mean(s)), **{f"p{q}": float(np.quantile(s, q / 100)) for q in (10, 50, 90)}}
        mine = found[found["check"].str.contains(window_id, regex=False)] if len(found) else found
        out.append(WindowFigures(
            window_id=str(window_id), start=w.start if w else computed, end=w.end if w else computed,
            labels_due_at=w.labels_due_at if w else None, model_version=str(part["model_version"].iloc[0]),
            n=n, n_labelled=n_labelled, status=status,
            metrics=part.drop(columns=["window_id", "model_version", "computed_at"]).reset_index(drop=True),
            score_quantiles=quantiles,
            drift_share=drift.get(w.extract_id) if w is not None and w.extract_id else None,
            incidents_open=int((mine["status"] == "open").sum()) if len(mine) else 0,
            incidents_total=len(mine)))
    return sorted(out, key=lambda f: (f.end, f.window_id))

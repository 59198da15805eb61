"""Every window of a cohort estimated, realised where labelled, side by side, and stored.

:func:`monitor_windows` reads the cohort's windows (:func:`.windows`), checks each served model
version's calibration on its held-out split once (:func:`.calibration_gate`), estimates every
window (:func:`.estimate_window`), computes realised figures on its labelled rows
(:func:`.realised_metrics`) and the estimation error — the estimate *on the same labelled rows*
minus the realised figure, so a partly labelled window is compared like for like. It replaces
the cohort's rows of ``monitoring.window_metrics`` and ``monitoring.estimation_errors`` in one
transaction and returns aggregates only.

A window's status: ``estimated_only`` (no label yet: no realised row exists, so nothing can pass),
``partly_labelled`` or ``labelled``. Its early warning is ``warn`` when an estimated recall gap
(or parity ratio) band lies wholly beyond the policy's bound for some group, naming the groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core.warehouse import transaction
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import settings
from clinical_mlops.monitoring.estimation._calibration import (
    MAX_CALIBRATION_ERROR, CalibrationGate, calibration_gate, heldout_rows)
from clinical_mlops.monitoring.estimation._cbpe import estimate_window
from clinical_mlops.monitoring.estimation._realised import realised_metrics
from clinical_mlops.monitoring.estimation._tables import ensure_tables
from clinical_mlops.monitoring.estimation._windows import Window, windows
from clinical_mlops.monitoring.production import DEFAULT_LABEL_DELAY_DAYS, utc_now

__all__ = ["COMPARED_METRICS", "WindowResult", "WindowsOutcome", "compare", "monitor_windows"]

COMPARED_METRICS = ("auroc", "recall", "precision", "brier", "selection_rate", "recall_gap",
                    "demographic_parity_ratio")


@dataclass(frozen=True)
class WindowResult:
    """One window: its description, estimated and realised figures (long tables), errors, verdicts."""

    window: Window
    status: str                      # estimated_only | partly_labelled | labelled
    early_warning: str               # warn | none
    warnings: tuple[str, ...]        # reasons naming each warned group
    estimated: pd.DataFrame
    realised: pd.DataFrame
    errors: pd.DataFrame
    refused: tuple[str, ...] = ()    # "attribute=group" refused by the calibration gate

    def figure(self, kind: str, metric: str, attribute: str = "overall", group: str = "all") -> dict | None:
        """One row of the estimated or realised table as a dict (``None`` if absent)."""
        table = self.estimated if kind == "estimated" else self.realised
        hit = table[(table["metric"] == metric) & (table["attribute"] == attribute) & (table["group"] == group)]
        return None if hit.empty else hit.iloc[0].to_dict()

    def summary(self) -> dict:
        """Aggregates only: the window, overall estimated vs realised AUROC and recall, verdicts."""
        out = {**self.window.summary(), "status": self.status, "early_warning": self.early_warning,
               "warnings": list(self.warnings), "refused_groups": list(self.refused)}
        for kind in ("estimated", "realised"):
            for metric in ("auroc", "recall"):
                row = self.figure(kind, metric)
                out[f"{kind}_{metric}"] = None if row is None or pd.isna(row["estimate"]) else float(row["estimate"])
        gaps = self.realised[self.realised["metric"] == "recall_gap"]["status"] if not self.realised.empty else []
        out["realised_recall_gap_failures"] = int((pd.Series(gaps) == "fail").sum())
        if not self.errors.empty:
            overall = self.errors[self.errors["attribute"] == "overall"].set_index("metric")["error"]
            out["error"] = {m: (None if pd.isna(v) else float(v)) for m, v in overall.items()}
        return out


@dataclass(frozen=True)
class WindowsOutcome:
    cohort: str
    windows: tuple[WindowResult, ...]
    gates: dict[tuple[str, str], CalibrationGate] = field(default_factory=dict)

    @property
    def warned(self) -> tuple[WindowResult, ...]:
        return tuple(w for w in self.windows if w.early_warning == "warn")

    def summary(self) -> list[dict]:
        return [w.summary() for w in self.windows]


def compare(estimated: pd.DataFrame, realised: pd.DataFrame) -> pd.DataFrame:
    """Estimated against realised point figures for every metric and group both have."""
    cols = ["attribute", "group", "metric"]
    if estimated.empty or realised.empty:
        return pd.DataFrame(columns=[*cols, "estimated", "realised", "error"])
    est = estimated[estimated["metric"].isin(COMPARED_METRICS)][[*cols, "estimate"]]
    real = realised[realised["metric"].isin(COMPARED_METRICS)][[*cols, "estimate"]]
    both = est.merge(real, on=cols, suffixes=("_est", "_real"))
    both = both.rename(columns={"estimate_est": "estimated", "estimate_real": "realised"})
    both["error"] = both["estimated"] - both["realised"]
    return both.reset_index(drop=True)


def _window_result(w: Window, gate: CalibrationGate, policy, *, n_simulations: int, seed: int) -> WindowResult:
    estimated = estimate_window(w.rows, policy, threshold=w.threshold, gate=gate, n_simulations=n_simulations,
                                seed=seed)
    status = "estimated_only" if w.n_labelled == 0 else ("labelled" if w.n_labelled == w.n else "partly_labelled")
    if status == "estimated_only":
        estimated.loc[estimated["status"] == "estimated", "status"] = "estimated_only"
    warned = estimated[estimated["status"] == "warn"]
    labelled = w.labelled
    realised = realised_metrics(labelled, policy, threshold=w.threshold)
    errors = pd.DataFrame()
    if not labelled.empty:
        on_labelled = estimate_window(labelled, policy, threshold=w.threshold, gate=gate, n_simulations=0)
        errors = compare(on_labelled[on_labelled["status"] != "refused"], realised).assign(n_labelled=len(labelled))
    refused = estimated[(estimated["status"] == "refused") & (estimated["metric"] == "recall")]
    return WindowResult(
        window=w, status=status, early_warning="warn" if len(warned) else "none",
        warnings=tuple(warned["reason"]), estimated=estimated, realised=realised, errors=errors,
        refused=tuple(f"{a}={g}" for a, g in zip(refused["attribute"], refused["group"])),
    )


def _store(con: duckdb.DuckDBPyConnection, cohort: str, results: list[WindowResult]) -> None:
    now = utc_now()
    metrics, errors = [], []
    for r in results:
        w = r.window
        for kind, table in (("estimated", r.estimated), ("realised", r.realised)):
            if not table.empty:
                metrics.append(table.assign(cohort=cohort, window_id=w.window_id, model_name=w.model_name,
                                            model_version=w.model_version, kind=kind, computed_at=now))
        if not r.errors.empty:
            errors.append(r.errors.assign(cohort=cohort, window_id=w.window_id, computed_at=now))
    metric_cols = ["cohort", "window_id", "model_name", "model_version", "kind", "attribute", "group", "n", "metric",
                   "estimate", "lower", "upper", "status", "reason", "computed_at"]
    error_cols = ["cohort", "window_id", "metric", "attribute", "group", "n_labelled", "estimated", "realised",
                  "error", "computed_at"]
    with transaction(con):
        con.execute("DELETE FROM monitoring.window_metrics WHERE cohort = ?", [cohort])
        con.execute("DELETE FROM monitoring.estimation_errors WHERE cohort = ?", [cohort])
        for name, frames, cols in (("window_metrics", metrics, metric_cols), ("estimation_errors", errors, error_cols)):
            if not frames:
                continue
            staged = pd.concat(frames, ignore_index=True)[cols]
            for c in ("estimate", "lower", "upper", "estimated", "realised", "error"):
                if c in staged:
                    staged[c] = staged[c].astype(float).replace([np.inf, -np.inf], np.nan)
            con.register("estimation_rows", staged)
            try:
                quoted = ", ".join(f'"{c}"' for c in cols)
                con.execute(f"INSERT INTO monitoring.{name} ({quoted}) SELECT {quoted} FROM estimation_rows")
            finally:
                con.unregister("estimation_rows")


def monitor_windows(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    policy,
    *,
    period: str | None = None,
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
    n_simulations: int = settings.ESTIMATION_N_SIMULATIONS,
    seed: int = settings.ESTIMATION_SEED,
    max_calibration_error: float = MAX_CALIBRATION_ERROR,
    store: bool = True,
) -> WindowsOutcome:
    """Estimate every window of the cohort, realise the labelled ones, store both tables (replacing the
    cohort's rows) and return aggregates per window."""
    ensure_tables(con)
    gates: dict[tuple[str, str], CalibrationGate] = {}
    results = []
    for w in windows(con, spec, period=period, label_delay_days=label_delay_days):
        key = (w.model_name, w.model_version)
        if key not in gates:
            gates[key] = calibration_gate(heldout_rows(con, spec, *key), policy, model_name=key[0],
                                          model_version=key[1], bound=max_calibration_error)
        results.append(_window_result(w, gates[key], policy, n_simulations=n_simulations, seed=seed))
    if store:
        _store(con, spec.name, results)
    return WindowsOutcome(spec.name, tuple(results), gates)

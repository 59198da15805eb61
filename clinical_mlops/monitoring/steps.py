"""What the production-monitoring assets do, as plain functions (no Dagster), one per asset.

* :func:`ingest_prediction_log` — ``[cohort, prediction_log_ingest]``;
* :func:`join_outcomes` — ``[cohort, prediction_outcomes]``;
* :func:`monitor_production` — ``[cohort, production_monitoring]``;
* :func:`training_serving_skew` — ``[cohort, training_serving_skew]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from clinical_mlops.core import evidence
from clinical_mlops.core.steps import StepError
from clinical_mlops.drift.statistics import DriftSettings
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy, for_cohort
from clinical_mlops.monitoring import estimation, incidents, production, settings
from clinical_mlops.scoring import prediction_log

if TYPE_CHECKING:  # the dashboard (Evidently) loads only when windows are published
    from clinical_mlops.monitoring.dashboard import DashboardResult

__all__ = ["LogIngestStep", "ProductionStep", "SkewStep", "WindowsStep", "estimate_windows", "ingest_prediction_log",
           "join_outcomes", "label_delay", "monitor_production", "training_serving_skew"]


def _incident(con: duckdb.DuckDBPyConnection, *, policy: Policy, severity: str, spec: CohortSpec, model: str,
              check: str, evidence: dict) -> dict:
    incident = incidents.open_incident(con, policy=policy, severity=severity, cohort=spec.name, model=model,
                                       check=check, evidence=evidence)
    return incident.as_metadata()


@dataclass(frozen=True)
class LogIngestStep:
    summary: prediction_log.IngestSummary
    heads_sha256: str
    log_directory: Path
    incident: dict
    """The incident a broken chain opened (``as_metadata``), else empty."""

    @property
    def torn_segments(self) -> int:
        return sum(1 for s in self.summary.segments if s.torn_tail)

    def evidence(self) -> evidence.Evidence:
        """``prediction_log_chain_intact``: fail on any broken link; no segment at all is nothing verified."""
        summary = self.summary
        if not summary.ok:
            return evidence.Evidence(evidence.FAIL, "; ".join(summary.problems[:5]))
        if not summary.segments:
            return evidence.Evidence(evidence.INSUFFICIENT, f"no prediction log segment for {summary.cohort} "
                                     "to verify (the scoring service has logged nothing yet)")
        return evidence.Evidence(evidence.PASS, f"{len(summary.segments)} segment(s), {summary.total_entries} "
                                 "entries: every hash chain verifies and links to its predecessor")


def ingest_prediction_log(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, log_root: Path, policy: Policy, run_id: str | None,
) -> LogIngestStep:
    """``[cohort, prediction_log_ingest]``: verify the scoring service's hash-chained log and copy what is
    new into ``monitoring.prediction_log``; a broken chain opens an incident."""
    summary = prediction_log.ingest(con, log_root, spec.name)
    heads = prediction_log.heads_digest(con, spec.name)
    incident = {}
    if not summary.ok:
        incident = _incident(
            con, policy=policy, severity="open_incident", spec=spec, model="prediction_log",
            check=f"{spec.name}/prediction_log_ingest:prediction_log_chain_intact",
            evidence={"problems": summary.problems[:20], "run_id": run_id},
        )
    return LogIngestStep(summary, heads, prediction_log.cohort_directory(log_root, spec.name), incident)


def join_outcomes(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy | None = None,
    label_delay_days: float | None = None, labels_file: Path | None = None, as_of: str | datetime | None = None,
) -> production.LabelJoinSummary:
    """``[cohort, prediction_outcomes]``: attach outcomes to production predictions (online and batch) once
    observed and once the label delay (default: the policy's ``monitoring.label_delay_days``) has passed, from
    the extracts and an optional labels file; ``as_of`` joins what was known at that past moment."""
    if labels_file is not None and not labels_file.exists():
        raise StepError(f"labels file {labels_file} does not exist", allow_retries=False)
    delay = label_delay(policy, label_delay_days)
    now = _as_of(as_of)
    try:
        return production.join_labels(con, spec, label_delay_days=delay, labels_file=labels_file, now=now)
    except ValueError as exc:
        raise StepError(str(exc), allow_retries=False) from None


def label_delay(policy: Policy | None, override: float | None) -> float:
    """The label delay in days: the override, else the policy's ``monitoring.label_delay_days``."""
    if override is not None:
        return float(override)
    return policy.monitoring.label_delay_days if policy is not None else production.DEFAULT_LABEL_DELAY_DAYS


def _as_of(value: str | datetime | None) -> datetime | None:
    """``as_of`` as a naive UTC timestamp; refused when unreadable or in the future (nothing is known yet)."""
    if value is None or value == "":
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise StepError(f"as_of {value!r} is not an ISO timestamp (e.g. 2026-12-01T09:30:00)",
                        allow_retries=False) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment > production.utc_now():
        raise StepError(f"as_of {moment.isoformat()} is in the future: outcomes can only be joined as of now or "
                        "earlier", allow_retries=False)
    return moment


@dataclass(frozen=True)
class ProductionStep:
    performance: production.PerformanceSummary
    fairness: production.ProductionFairness
    model: str
    """The model in service, ``name vN`` (``none`` without labelled predictions)."""
    incidents: dict[str, dict]
    """Rule name → the incident its blocking failure opened (``as_metadata``)."""
    auroc_plot: bytes | None
    policy: Policy


def monitor_production(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, period: str, window_days: float,
    min_labelled: int, auroc_tolerance: float, n_bootstrap: int, run_id: str | None,
) -> ProductionStep:
    """``[cohort, production_monitoring]``: performance over time of the model in service on labelled
    production predictions (its AUROC interval against the held-out AUROC minus the tolerance) and fairness
    under the policy, each judged pass / fail / insufficient evidence; each failing blocking fairness rule
    opens an incident (insufficient evidence opens none: it is a lack of evidence, not a finding)."""
    policy = for_cohort(policy, spec)  # the thresholds, with the sensitive attributes of the cohort's source
    performance = production.performance_over_time(
        con, spec, period=period, window_days=window_days, min_labelled=min_labelled,
        auroc_tolerance=auroc_tolerance, n_boot=n_bootstrap,
    )
    fair = production.production_fairness(con, spec, policy=policy, window_days=window_days,
                                          n_bootstrap=n_bootstrap)
    model = "none" if performance.current_model is None else " v".join(performance.current_model)
    opened = {}
    for rule in policy.fairness.metrics:
        judged = fair.rule_evidence(rule.name)
        if judged.evidence.status == evidence.FAIL and rule.blocking:  # a finding, not a lack of evidence
            opened[rule.name] = _incident(
                con, policy=policy, severity=rule.severity, spec=spec, model=model,
                check=f"{spec.name}/production_monitoring:{rule.check_name}",
                evidence={"failing": judged.failing, "audit_id": fair.audit_id, "run_id": run_id},
            )
    plot = None
    if not performance.table.empty:
        plot = production.plot_over_time(performance.table, "auroc", title=f"{spec.name}: production AUROC")
    return ProductionStep(performance, fair, model, opened, plot, policy)


@dataclass(frozen=True)
class SkewStep:
    result: production.SkewResult
    top_features: list[dict]
    """The ten most skewed features: PSI, value mismatch rate, verdict."""
    policy_sha256: str


def training_serving_skew(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, window_days: float, min_served: int,
    max_mismatch_rate: float,
) -> SkewStep:
    """``[cohort, training_serving_skew]``: served features (prediction log) against the training split's,
    per feature under the drift policy, and value agreement for encounters seen on both sides."""
    result = production.training_serving_skew(
        con, spec, drift_settings=DriftSettings.from_policy(policy.drift), window_days=window_days,
        min_served=min_served, max_mismatch_rate=max_mismatch_rate, policy_sha256=policy.sha256,
    )
    top = []
    if not result.table.empty:
        ranked = result.table.sort_values(["skewed", "psi"], ascending=False).head(10)
        top = [{"feature": r.feature, "psi": round(float(r.psi), 4) if r.psi == r.psi else None,
                "mismatch_rate": None if r.mismatch_rate is None or r.mismatch_rate != r.mismatch_rate
                else round(float(r.mismatch_rate), 4), "skewed": bool(r.skewed)}
               for r in ranked.itertuples(index=False)]
    return SkewStep(result, top, policy.sha256)


@dataclass(frozen=True)
class WindowsStep:
    outcome: estimation.WindowsOutcome
    incidents: dict[str, dict]
    """Window id → the warn incident its early warning opened (or found open)."""
    realised_incidents: dict[str, dict] = field(default_factory=dict)
    """``window id:rule`` → the incident a blocking rule's realised failure opened, at the rule's severity."""
    dashboard: DashboardResult | None = None
    """The published dashboard when a reports folder was given."""

    def evidence(self) -> evidence.Evidence:
        """``estimated_fairness_within_policy``: fail when a window's estimated recall-gap band lies wholly beyond
        the bound for a group (before its labels); no window, or no estimate at all, is insufficient evidence."""
        results = self.outcome.windows
        if not results:
            return evidence.Evidence(evidence.INSUFFICIENT, f"no production window for {self.outcome.cohort}: "
                                     "nothing scored yet")
        warned = [r for r in results if r.early_warning == "warn"]
        if warned:
            return evidence.Evidence(evidence.FAIL, "; ".join(f"{r.window.window_id}: {w}" for r in warned
                                                              for w in r.warnings)[:1500])
        if not any(_has_gap_estimate(r) for r in results):
            return evidence.Evidence(evidence.INSUFFICIENT, "no group's recall gap could be estimated in any window "
                                     "(groups refused by the calibration gate or too small)")
        return evidence.Evidence(evidence.PASS, f"{len(results)} window(s): no group's estimated recall-gap band lies "
                                 "wholly beyond the bound")


def _has_gap_estimate(result) -> bool:
    table = result.estimated
    return not table.empty and bool(((table["metric"] == "recall_gap") & table["estimate"].notna()).any())


def estimate_windows(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy,
    n_simulations: int = settings.ESTIMATION_N_SIMULATIONS, seed: int = settings.ESTIMATION_SEED,
    period: str | None = None, label_delay_days: float | None = None, reports_dir: Path | None = None,
    dashboard_dir: Path | None = None,
) -> WindowsStep:
    """``[cohort, production_windows]``: every production window of the cohort estimated from its scores before
    labels (per subgroup, after the held-out calibration gate), realised once labelled, side by side in
    ``monitoring.window_metrics`` / ``monitoring.estimation_errors``; an early warning opens a ``warn`` incident
    before the labels land (once per window). The window period, label delay and calibration bound are the
    policy's ``monitoring`` section unless given. With ``reports_dir`` the windows are then published: the
    cohort's Evidently project in ``dashboard_dir`` (default: ``evidently/`` beside ``reports_dir``) and its
    static page under ``reports_dir``."""
    policy = for_cohort(policy, spec)  # the thresholds, with the sensitive attributes of the cohort's source
    outcome = estimation.monitor_windows(
        con, spec, policy, n_simulations=n_simulations, seed=seed, period=period or policy.monitoring.window_period,
        label_delay_days=label_delay(policy, label_delay_days),
        max_calibration_error=policy.monitoring.max_calibration_error)
    opened = {}
    for result in outcome.windows:
        if result.early_warning == "warn":
            opened[result.window.window_id] = _incident(
                con, policy=policy, severity="warn", spec=spec,
                model=f"{result.window.model_name} v{result.window.model_version}",
                check=f"{spec.name}/production_windows:estimated_fairness_within_policy[{result.window.window_id}]",
                evidence={"window": result.window.window_id, "status": result.status,
                          "warnings": list(result.warnings)[:10]})
    step = WindowsStep(outcome=outcome, incidents=opened, realised_incidents=_realised_incidents(con, spec, policy,
                                                                                                outcome))
    if reports_dir is None:
        return step
    from clinical_mlops.monitoring import dashboard  # Evidently loads only when the windows are published

    reports_dir = Path(reports_dir)
    board = dashboard.publish(con, spec, outcome, policy=policy,
                              workspace_dir=Path(dashboard_dir or reports_dir.parent / "evidently"),
                              reports_dir=reports_dir)
    return replace(step, dashboard=board)


def _realised_incidents(con: duckdb.DuckDBPyConnection, spec: CohortSpec, policy: Policy,
                        outcome: estimation.WindowsOutcome) -> dict[str, dict]:
    """Once a window's labels are joined, each blocking rule that fails on them (the offline gate's verdicts)
    opens an incident at the rule's severity (once per window and rule)."""
    opened = {}
    for result in outcome.windows:
        realised = result.realised
        if realised.empty:
            continue
        for rule in policy.fairness.metrics:
            failing = realised[(realised["metric"] == rule.name) & (realised["status"] == evidence.FAIL)]
            if failing.empty or not rule.blocking:
                continue
            w = result.window
            opened[f"{w.window_id}:{rule.name}"] = _incident(
                con, policy=policy, severity=rule.severity, spec=spec, model=f"{w.model_name} v{w.model_version}",
                check=f"{spec.name}/production_windows:{rule.check_name}[{w.window_id}]",
                evidence={"window": w.window_id, "n_labelled": w.n_labelled,
                          "failing": [f"{a}={g}: {e:+.3f} [{lo:+.3f}, {hi:+.3f}]" for a, g, e, lo, hi in zip(
                              failing["attribute"], failing["group"], failing["estimate"], failing["lower"],
                              failing["upper"])][:10]})
    return opened

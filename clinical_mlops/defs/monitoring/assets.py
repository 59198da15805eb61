"""Production monitoring: the prediction log ingested and verified, outcomes joined as they arrive,
performance and fairness over time under the policy, and training–serving skew (per cohort).

Every check goes through :func:`clinical_mlops.defs.checks.evidence_check`: no labelled outcome in
the window, too few, nothing served or nothing logged is ``insufficient_evidence`` — a failed check
that says why, never ``passed=True``. Its severity is WARN: a lack of evidence after deployment is
shown, not treated as a finding, so the monitoring run goes on (labels arrive weeks after the
predictions); a blocking rule that *fails* on evidence is an ERROR and fails the run.
"""


import base64
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from clinical_mlops.defs.partitions import cohort_code_version, validated_key

from clinical_mlops.core import evidence
from clinical_mlops.defs.checks import evidence_check
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.resources import (
    WAREHOUSE_POOL,
    PolicyResource,
    ReportsResource,
    WarehouseResource,
    default_policy,
)
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.governance.policy import Policy
from clinical_mlops.monitoring import settings

if TYPE_CHECKING:
    from clinical_mlops.monitoring import steps

__all__ = ["GROUP", "LabelJoinConfig", "PredictionLogConfig", "ProductionMonitoringConfig", "SkewConfig",
           "WindowsConfig", "build_monitoring_assets", "defs"]

GROUP = "monitoring"


class PredictionLogConfig(dg.Config):
    prediction_log_dir: str = ""
    """Root of the scoring service's log; empty = where ``clinical-mlops serve`` writes it
    (``$CLINICAL_MLOPS_PREDICTION_LOG`` or ``<data dir>/serving/prediction_log``)."""

    def root(self) -> Path:
        from clinical_mlops.scoring import prediction_log

        return Path(self.prediction_log_dir) if self.prediction_log_dir else prediction_log.default_root()


class LabelJoinConfig(dg.Config):
    label_delay_days: float | None = None
    """Days after a prediction before its outcome counts as known; empty = the policy's
    ``monitoring.label_delay_days`` (30-day readmission: 30)."""
    labels_file: str = ""
    """Optional CSV ``encounter_id,label[,observed_at]`` of outcomes from outside the extracts."""
    as_of: str = ""
    """Join what was known at this moment (ISO UTC, not in the future); empty = now. Replays a past
    moment, e.g. the demo's windows just after the newest was scored."""


class WindowsConfig(dg.Config):
    label_delay_days: float | None = None
    """When each window's labels are due; empty = the policy's ``monitoring.label_delay_days``."""


class ProductionMonitoringConfig(dg.Config):
    """Defaults: :mod:`clinical_mlops.monitoring.settings`."""

    window_days: float = settings.PRODUCTION_WINDOW_DAYS
    period: str = settings.PERFORMANCE_PERIOD
    min_labelled: int = settings.MIN_LABELLED
    auroc_tolerance: float = settings.AUROC_TOLERANCE
    """Fail when the production AUROC interval lies wholly below held-out AUROC minus this."""
    n_bootstrap: int = settings.PERFORMANCE_N_BOOTSTRAP


class SkewConfig(dg.Config):
    """Defaults: :mod:`clinical_mlops.monitoring.settings`."""

    window_days: float = settings.SKEW_WINDOW_DAYS
    min_served: int = settings.MIN_SERVED
    max_mismatch_rate: float = settings.MAX_MISMATCH_RATE
    """Largest share of encounters (seen served and in the warehouse) allowed a different served value."""


def _erroring(blocking: bool, judged: evidence.Evidence) -> bool:
    """ERROR severity for a blocking rule that fails on evidence; WARN for insufficient evidence."""
    return blocking and judged.status != evidence.INSUFFICIENT


def _fairness_check(rule, step: "steps.ProductionStep") -> dg.AssetCheckResult:
    """One policy rule on production predictions: pass / fail / insufficient evidence, per group on its interval."""
    fair, policy = step.fairness, step.policy
    judged = fair.rule_evidence(rule.name)
    metadata: dict = {"labelled_in_window": fair.n, "policy_sha256": policy.sha256, "audit_id": fair.audit_id or ""}
    if judged.counts:
        metadata["verdicts"] = dg.MetadataValue.json(judged.counts)
    if judged.failing:
        metadata["failing"] = dg.MetadataValue.json(judged.failing)
    return evidence_check(rule.check_name, judged.evidence, blocking=_erroring(rule.blocking, judged.evidence),
                          metadata={**metadata, **step.incidents.get(rule.name, {})})


def _monitoring_result(step: "steps.ProductionStep", declared: Policy) -> dg.MaterializeResult:
    performance = step.performance
    check_results = [evidence_check(
        "production_auroc_within_tolerance", performance.evidence, blocking=False,
        metadata={"labelled_in_window": performance.window_n,
                  "heldout_auroc": performance.heldout_auroc if performance.heldout_auroc is not None else -1.0},
    )]
    check_results += [_fairness_check(rule, step) for rule in declared.fairness.metrics]
    metadata: dict = {
        "policy_version": step.policy.version,
        "policy_sha256": step.policy.sha256,
        "model_in_service": step.model,
        "labelled_in_window": performance.window_n,
        "positives_in_window": performance.window_positives,
        "performance_verdict": performance.verdict,
        "fairness_groups_judged": step.fairness.n,
    }
    for name in ("auroc", "auprc", "brier", "tpr", "precision", "selection_rate"):
        if name in performance.window:
            e = performance.window[name]
            metadata[f"window_{name}"] = round(e.estimate, 4) if e.estimate == e.estimate else -1.0
    if step.auroc_plot is not None:
        metadata["auroc_over_time"] = dg.MetadataValue.md(
            f"![auroc](data:image/png;base64,{base64.b64encode(step.auroc_plot).decode()})")
    return dg.MaterializeResult(metadata=metadata, check_results=check_results)


def build_monitoring_assets(spec: CohortSpec) -> list[dg.AssetsDefinition]:
    declared = default_policy().load()
    ingest_key = dg.AssetKey([spec.name, "prediction_log_ingest"])
    outcomes_key = dg.AssetKey([spec.name, "prediction_outcomes"])
    monitoring_key = dg.AssetKey([spec.name, "production_monitoring"])
    skew_key = dg.AssetKey([spec.name, "training_serving_skew"])

    @dg.asset(
        key=ingest_key,
        group_name=GROUP,
        kinds={"duckdb", "json"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="The scoring service's hash-chained prediction log, verified and copied into "
        "monitoring.prediction_log (incremental; tampering opens an incident).",
        check_specs=[
            dg.AssetCheckSpec(
                "prediction_log_chain_intact", asset=ingest_key, blocking=True,
                description="Every segment's hash chain verifies, earlier verified bytes are unchanged, and each "
                "segment links to an existing predecessor.",
            )
        ],
    )
    def prediction_log_ingest(
        context: dg.AssetExecutionContext, config: PredictionLogConfig, warehouse: WarehouseResource,
        policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.monitoring import steps

        with warehouse.connect() as con:
            step = steps.ingest_prediction_log(con, spec, log_root=config.root(), policy=policy.load(),
                                               run_id=context.run.run_id)
        summary, torn, chain = step.summary, step.torn_segments, step.evidence()
        return dg.MaterializeResult(
            metadata={
                "segments": len(summary.segments),
                "new_entries": summary.new_entries,
                "new_predictions": summary.new_predictions,
                "total_entries": summary.total_entries,
                "total_predictions": summary.total_predictions,
                "segments_with_torn_tail": torn,
                "log_heads_sha256": step.heads_sha256,
                "log_directory": dg.MetadataValue.path(str(step.log_directory)),
                "dagster/row_count": summary.total_entries,
            },
            check_results=[
                # An empty log is insufficient evidence at WARN: nothing to verify must not stop the batch
                # outcomes downstream; a broken chain is a failure at ERROR and blocks them.
                evidence_check("prediction_log_chain_intact", chain, blocking=_erroring(True, chain),
                               metadata={"problems": dg.MetadataValue.json(summary.problems[:20]),
                                         "segments_with_torn_tail": torn, **step.incident})
            ],
        )

    @dg.asset(
        key=outcomes_key,
        deps=[ingest_key, dg.AssetKey([spec.name, "batch_predictions"]), validated_key(spec.source)],
        group_name=GROUP,
        kinds={"duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="Label join: outcomes attached to production predictions (online and batch) once observed "
        "and once the label delay has passed; monitoring.prediction_outcomes.",
    )
    def prediction_outcomes(config: LabelJoinConfig, warehouse: WarehouseResource,
                            policy: PolicyResource) -> dg.MaterializeResult:
        from clinical_mlops.monitoring import steps

        with step_failures(), warehouse.connect() as con:
            summary = steps.join_outcomes(con, spec, policy=policy.load(), label_delay_days=config.label_delay_days,
                                          labels_file=Path(config.labels_file) if config.labels_file else None,
                                          as_of=config.as_of or None)
        return dg.MaterializeResult(
            metadata={
                "predictions": summary.predictions,
                "labelled": summary.labelled,
                "newly_labelled": summary.newly_labelled,
                "awaiting_label_delay": summary.awaiting_delay,
                "awaiting_outcome": summary.awaiting_outcome,
                "excluded_by_cohort_rules": summary.excluded,
                "label_coverage": round(summary.label_coverage, 4),
                "label_delay_days": summary.label_delay_days,
                "labels_file_rows": summary.labels_file_rows,
                "dagster/row_count": summary.labelled,
            }
        )

    fairness_checks = [
        dg.AssetCheckSpec(
            rule.check_name, asset=monitoring_key, blocking=rule.blocking,
            description=f"Production {rule.name.replace('_', ' ')}: {rule.describe()} for every group "
            f"(policy severity {rule.severity}).",
        )
        for rule in declared.fairness.metrics
    ]

    @dg.asset(
        key=monitoring_key,
        deps=[outcomes_key],
        group_name=GROUP,
        kinds={"duckdb", "scikit-learn"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="Performance (AUROC, AUPRC, Brier, recall, precision, alerts) over time and fairness under the "
        "governance policy, on labelled production predictions of the model in service.",
        check_specs=[
            dg.AssetCheckSpec(
                "production_auroc_within_tolerance", asset=monitoring_key,
                description="The production AUROC interval lies wholly at or above the held-out AUROC minus the "
                "tolerance (wholly below: fail; straddling, or too few labelled outcomes: insufficient evidence).",
            ),
            *fairness_checks,
        ],
    )
    def production_monitoring(
        context: dg.AssetExecutionContext, config: ProductionMonitoringConfig, warehouse: WarehouseResource,
        policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.monitoring import steps

        with warehouse.connect() as con:
            step = steps.monitor_production(
                con, spec, policy=policy.load(), period=config.period, window_days=config.window_days,
                min_labelled=config.min_labelled, auroc_tolerance=config.auroc_tolerance,
                n_bootstrap=config.n_bootstrap, run_id=context.run.run_id,
            )
        return _monitoring_result(step, declared)

    @dg.asset(
        key=skew_key,
        deps=[ingest_key, dg.AssetKey([spec.name, "encounter_features"]), dg.AssetKey([spec.name, "training_split"])],
        group_name=GROUP,
        kinds={"duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="Training–serving skew: served features (prediction log) against the training split's features, "
        "per feature (KS / chi-square + PSI under the drift policy) and value agreement for encounters on both sides.",
        check_specs=[
            dg.AssetCheckSpec(
                "no_training_serving_skew", asset=skew_key,
                description="No feature is served with a materially different distribution or with values that "
                "disagree with the training SQL.",
            )
        ],
    )
    def training_serving_skew(
        config: SkewConfig, warehouse: WarehouseResource, policy: PolicyResource
    ) -> dg.MaterializeResult:
        from clinical_mlops.monitoring import steps

        with warehouse.connect() as con:
            step = steps.training_serving_skew(con, spec, policy=policy.load(), window_days=config.window_days,
                                               min_served=config.min_served,
                                               max_mismatch_rate=config.max_mismatch_rate)
        result = step.result
        return dg.MaterializeResult(
            metadata={"verdict": result.verdict, "n_reference": result.n_reference, "n_served": result.n_served,
                      "n_matched": result.n_matched, "skewed_features": len(result.skewed_features),
                      "policy_sha256": step.policy_sha256},
            check_results=[evidence_check(
                "no_training_serving_skew", result.evidence, blocking=_erroring(True, result.evidence),
                metadata={"n_served": result.n_served, "top_features": dg.MetadataValue.json(step.top_features)},
            )],
        )

    windows_key = dg.AssetKey([spec.name, "production_windows"])

    @dg.asset(
        key=windows_key,
        deps=[dg.AssetKey([spec.name, "batch_predictions"]), outcomes_key],
        group_name=GROUP,
        kinds={"duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="Monitoring windows (per extract scored, per period of the service's log), each with its model "
        "version and label delay: performance and fairness estimated from the scores before the labels arrive "
        "(per subgroup, after the held-out calibration gate), realised once labelled, side by side "
        "(monitoring.window_metrics, monitoring.estimation_errors).",
        check_specs=[
            dg.AssetCheckSpec(
                "estimated_fairness_within_policy", asset=windows_key,
                description="Early warning: no group's estimated recall-gap band lies wholly beyond the policy's bound "
                "in any window (a breach opens a warn incident before the labels land; no estimate: insufficient "
                "evidence).",
            )
        ],
    )
    def production_windows(config: WindowsConfig, warehouse: WarehouseResource, policy: PolicyResource,
                           reports: ReportsResource) -> dg.MaterializeResult:
        from clinical_mlops.monitoring import steps

        with step_failures(), warehouse.connect() as con:
            step = steps.estimate_windows(con, spec, policy=policy.load(), label_delay_days=config.label_delay_days,
                                          reports_dir=Path(reports.directory))
        board = step.dashboard
        latest = step.outcome.windows[-1].summary() if step.outcome.windows else {}
        numbers = {f"latest_{k}": float(v) for k, v in latest.items()
                   if k.startswith(("estimated_", "realised_")) and isinstance(v, int | float) and v is not None}
        found = step.evidence()
        return dg.MaterializeResult(
            metadata={
                "windows": len(step.outcome.windows),
                "windows_estimated_only": sum(1 for r in step.outcome.windows if r.status == "estimated_only"),
                "windows_warned": sum(1 for r in step.outcome.windows if r.early_warning == "warn"),
                **numbers,
                "latest_window": str(latest.get("window_id", "")),
                "incidents": dg.MetadataValue.json(step.incidents),
                "realised_incidents": dg.MetadataValue.json(step.realised_incidents),
                "dashboard_page": dg.MetadataValue.path(str(board.page_path)),
                "evidently_project_id": str(board.project_id),
                "evidently_snapshots": board.snapshots,
            },
            check_results=[evidence_check("estimated_fairness_within_policy", found, blocking=False,
                                          metadata={"incidents": len(step.incidents)})],
        )

    return [prediction_log_ingest, prediction_outcomes, production_monitoring, training_serving_skew,
            production_windows]


@dg.definitions
def defs() -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    for spec in load_all_cohorts():
        assets.extend(build_monitoring_assets(spec))
    return dg.Definitions(assets=assets)

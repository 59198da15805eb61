"""Fairness: subgroup audit with policy gates, root-cause analysis, and a mitigated challenger.

Per cohort:

* ``[cohort, "fairness_report"]`` audits the latest candidate's held-out predictions against
  ``governance/policy.yaml``. One asset check per policy metric (``recall_gap_within_policy`` …)
  under the evidence rule (:func:`clinical_mlops.defs.checks.evidence_check`): passed only on
  ``pass``; ``insufficient_evidence`` is a failed check whose description starts "insufficient
  evidence:" and names the required groups lacking evidence. Severity ERROR for
  block_promotion/open_incident metrics, WARN otherwise; the checks are *not* Dagster-blocking:
  the promotion asset enforces the gate from the stored verdicts, so root cause, mitigation and
  change control still run when a check fails. A failing blocking rule opens an incident (owner
  and deadline from the policy).
* ``[cohort, "fairness_root_cause"]`` and ``[cohort, "mitigated_model"]`` run when a fairness
  check fails (``fairness_check_failed_sensor``) or by hand; with nothing failing they say so.

The work is :mod:`clinical_mlops.fairness.steps`; this module wires it.
"""

from typing import TYPE_CHECKING

import dagster as dg

from clinical_mlops.defs.partitions import cohort_code_version
from clinical_mlops.defs.checks import evidence_check
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.resources import (
    WAREHOUSE_POOL,
    PolicyResource,
    ReportsResource,
    TrackingResource,
    WarehouseResource,
    default_policy,
)
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.governance.policy import Policy

if TYPE_CHECKING:
    from clinical_mlops.fairness import rule_checks, steps

__all__ = [
    "FairnessConfig",
    "MitigationConfig",
    "build_fairness_report",
    "build_mitigated_model",
    "build_root_cause",
    "check_result",
    "defs",
    "fairness_assets",
]

_GROUP = "fairness"


class FairnessConfig(dg.Config):
    policy_path: str = ""
    """Policy file; empty means the policy resource's (governance/policy.yaml or CLINICAL_MLOPS_POLICY)."""
    n_bootstrap: int = 0
    """Bootstrap replicates; 0 means the policy's fairness.n_bootstrap."""

    def n_boot(self) -> int | None:
        return self.n_bootstrap or None


class MitigationConfig(FairnessConfig):
    methods: list[str] = []
    """Mitigations to compare; empty means the policy's fairness.mitigation.methods."""
    eg_max_iter: int = 20
    seed: int = 7


def check_result(check: "rule_checks.RuleCheck") -> dg.AssetCheckResult:
    """A rule's check, decided in :mod:`clinical_mlops.fairness.rule_checks`, as Dagster's result."""
    metadata = {k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v for k, v in check.metadata.items()}
    return evidence_check(check.check_name, check.evidence, blocking=check.blocking, metadata=metadata,
                          description=check.description)


def build_fairness_report(spec: CohortSpec, declared: Policy) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "fairness_report"])
    check_specs = [
        dg.AssetCheckSpec(
            rule.check_name, asset=key, blocking=False,
            description=f"{rule.name}: {rule.describe()} (severity {rule.severity}"
                        f"{', ERROR: blocks promotion' if rule.blocking else ', WARN'}). Passes only on evidence: fails when "
                        "a group's whole CI is outside the bound; insufficient evidence (not a pass) when a required "
                        "group lacks evidence or no group could be assessed; other groups without evidence are listed "
                        "as not assessable. Not Dagster-blocking by design: the promotion asset enforces the gate from "
                        "the stored verdicts, because a Dagster-blocking check would also skip root cause, mitigation "
                        "and change control in the same run, which must run exactly when this check fails.")
        for rule in declared.fairness.metrics
    ]

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([spec.name, "model_evaluation"])],
        group_name=_GROUP,
        kinds={"fairlearn", "duckdb"},
        code_version=cohort_code_version(spec, f"1-policy-{declared.short_hash}"),
        pool=WAREHOUSE_POOL,
        check_specs=check_specs,
        description="Subgroup and intersectional audit of the latest candidate at its operating threshold: metrics, "
        "disparities with bootstrap CIs, corrected significance tests, verdicts per policy rule; stored in "
        "monitoring.fairness_metrics / fairness_verdicts with the policy hash, and an HTML report.",
    )
    def fairness_report_asset(
        context: dg.AssetExecutionContext, config: FairnessConfig, warehouse: WarehouseResource,
        reports: ReportsResource, policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.fairness import steps

        with step_failures(), warehouse.connect() as con:
            step = steps.audit_candidate(con, spec, policy=policy.load(config.policy_path), n_bootstrap=config.n_boot(),
                                         reports_dir=reports.directory, run_id=context.run.run_id, log=context.log,
                                         declared=declared)
        result = step.audit
        return dg.MaterializeResult(
            metadata={
                "model": step.model_label,
                "operating_threshold": round(result.threshold, 5),
                "test_rows": result.n,
                "bootstrap": dg.MetadataValue.json(step.bootstrap),
                "policy_version": result.policy_version,
                "policy_sha256": result.policy_sha256,
                "audit_id": step.audit_id,
                "verdicts": dg.MetadataValue.json(result.verdict_counts),
                "blocking_failed": result.blocking_failed,
                "blocking_status": result.blocking_status,
                "required_groups": dg.MetadataValue.md(step.required_groups_markdown),
                "summary": dg.MetadataValue.md(step.summary_markdown),
                "recall_gaps": dg.MetadataValue.md(step.recall_gaps_markdown),
                "recall_gap_plot": dg.MetadataValue.md(step.recall_gap_plot_markdown),
                "report": dg.MetadataValue.path(str(step.report_path)),
                "incidents": dg.MetadataValue.json(step.incidents_metadata),
            },
            check_results=[check_result(c) for c in step.checks],
        )

    return fairness_report_asset


def build_root_cause(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "fairness_root_cause"],
        deps=[dg.AssetKey([spec.name, "fairness_report"])],
        group_name=_GROUP,
        kinds={"scikit-learn", "duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="For each failing group: representation vs the declared population, label prevalence, "
        "missingness, feature shifts, per-group permutation importance, calibration and threshold effects — as findings.",
    )
    def fairness_root_cause(
        context: dg.AssetExecutionContext, config: FairnessConfig, warehouse: WarehouseResource,
        tracking: TrackingResource, reports: ReportsResource, policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.fairness import steps

        with warehouse.connect(read_only=False) as con:
            step = steps.analyse_root_cause(con, spec, policy=policy.load(config.policy_path),
                                            tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root,
                                            reports_dir=reports.directory, log=context.log)
        if step.model_label is None:
            return dg.MaterializeResult(metadata={"status": step.status, "policy_sha256": step.policy_sha256})
        return dg.MaterializeResult(metadata={
            "status": step.status,
            "model": step.model_label,
            "policy_sha256": step.policy_sha256,
            "findings": dg.MetadataValue.md(step.findings_markdown),
            "conclusions": dg.MetadataValue.json(step.conclusions),
            "report": dg.MetadataValue.path(str(step.report_path)),
        })

    return fairness_root_cause


def _mitigated_metadata(step: "steps.MitigationStep", ui_url: str) -> dict:
    from clinical_mlops.core import tracking as tracking_lib

    chosen, registered = step.chosen, step.registered
    return {
        "status": step.status,
        "registered_model": registered.name,
        "model_version": registered.version,
        "mlflow_run": dg.MetadataValue.url(tracking_lib.run_url(ui_url, registered.experiment_id, registered.run_id)),
        "mitigation": chosen.method,
        "mitigation_kind": chosen.kind,
        "needs_sensitive_attribute": chosen.needs_sensitive_attribute,
        "target": step.target_text,
        "recall_gap_before": round(step.recall_gap_before["estimate"], 4),
        "recall_gap_before_ci": step.recall_gap_before_ci,
        "recall_gap_after": round(step.recall_gap_after["estimate"], 4),
        "recall_gap_after_ci": step.recall_gap_after_ci,
        "chosen_because": step.comparison.reason,
        "tradeoff": dg.MetadataValue.md(step.tradeoff_markdown),
        "verdicts_after": dg.MetadataValue.json(step.audit.verdict_counts),
        "audit_id": step.audit_id,
        "policy_sha256": step.policy_sha256,
        "report": dg.MetadataValue.path(str(step.report_path)),
    }


def build_mitigated_model(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "mitigated_model"],
        deps=[dg.AssetKey([spec.name, "fairness_report"])],
        group_name=_GROUP,
        kinds={"fairlearn", "mlflow"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="When a fairness check fails: compare post- and in-processing mitigations on the same test split "
        "(trade-off table), register the chosen one as <cohort>_mitigated (a challenger) and audit it.",
    )
    def mitigated_model(
        context: dg.AssetExecutionContext, config: MitigationConfig, warehouse: WarehouseResource,
        tracking: TrackingResource, reports: ReportsResource, policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.fairness import steps

        with warehouse.connect() as con:
            step = steps.mitigate(
                con, spec, policy=policy.load(config.policy_path), methods=config.methods, n_bootstrap=config.n_boot(),
                seed=config.seed, eg_max_iter=config.eg_max_iter, tracking_uri=tracking.tracking_uri,
                artifact_root=tracking.artifact_root, reports_dir=reports.directory, log=context.log,
            )
        if step.outcome == "no_failing_group":
            return dg.MaterializeResult(metadata={"status": step.status, "policy_sha256": step.policy_sha256})
        if step.outcome == "none_chosen":
            return dg.MaterializeResult(metadata={"status": step.status})
        return dg.MaterializeResult(metadata=_mitigated_metadata(step, tracking.ui_url),
                                    tags={"mlflow_run_id": step.registered.run_id})

    return mitigated_model


def fairness_assets(policy: Policy | None = None) -> list[dg.AssetsDefinition]:
    declared = policy or default_policy().load()
    assets: list[dg.AssetsDefinition] = []
    for spec in load_all_cohorts():
        assets += [build_fairness_report(spec, declared), build_root_cause(spec), build_mitigated_model(spec)]
    return assets


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=fairness_assets())

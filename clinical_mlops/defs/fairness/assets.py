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

import base64

from typing import TYPE_CHECKING

import dagster as dg

from clinical_mlops.core import evidence
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
from clinical_mlops.governance.policy import MetricRule, Policy

if TYPE_CHECKING:
    from clinical_mlops.fairness import audit as fairness, steps

GROUP = "fairness"


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


def _md_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _group_text(g: dict) -> str:
    gap = g.get("min_detectable_gap")
    mdg = f"min detectable gap {gap:.3f}" if gap is not None else "min detectable gap: none, no drop is detectable at this size"
    return f"{g['slice']}={g['group']} (n={g['n']}, positives={g['n_positive']}, {mdg})"


def _description(rule: MetricRule, outcome: "fairness.RuleOutcome") -> str:
    if outcome.status == evidence.FAIL:
        return "; ".join(f"{e['slice']}={e['group']}: {e['estimate']:+.3f} CI [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]"
                         for e in outcome.evidence(5))
    listed = len(outcome.not_assessable)
    tail = f"; {listed} group(s) not assessable (listed, need an acknowledgement at promotion)" if listed else ""
    if outcome.status == evidence.INSUFFICIENT:
        missing = outcome.required_evidence()
        if missing:
            return "required group(s) without sufficient evidence: " + "; ".join(map(_group_text, missing)) + tail
        return outcome.reason
    return f"every assessed group's interval lies inside the bound ({rule.describe()}){tail}"


def _check_results(result: "fairness.FairnessAudit", declared: Policy, incident_by_rule: dict) -> list[dg.AssetCheckResult]:
    """One result per declared rule under the evidence rule: passed only on ``pass``."""
    results = []
    active = {r.name for r in result.rules}
    for rule in declared.fairness.metrics:
        if rule.name not in active:
            missing = evidence.Evidence(evidence.INSUFFICIENT, f"rule {rule.name} is not in the policy used for this "
                                                               f"run (sha256 {result.policy_sha256[:12]})")
            results.append(evidence_check(rule.check_name, missing, blocking=rule.blocking, metadata={
                "policy_version": result.policy_version, "policy_sha256": result.policy_sha256,
                "severity_in_policy": rule.severity}))
            continue
        outcome = result.outcome(rule.name)
        metadata = {
            "policy_version": result.policy_version,
            "policy_sha256": result.policy_sha256,
            "bound": rule.describe(),
            "severity_in_policy": rule.severity,
            "status": outcome.status,
            "groups_pass": outcome.counts["pass"],
            "groups_fail": outcome.counts["fail"],
            "groups_insufficient_evidence": outcome.counts["insufficient_evidence"],
            "failing_groups": dg.MetadataValue.json(outcome.evidence()),
            "insufficient_required_groups": dg.MetadataValue.json(outcome.required_evidence()),
            "not_assessable_groups": dg.MetadataValue.json(outcome.not_assessable_evidence()),
            "required_groups": dg.MetadataValue.json(_required_groups(result)),
        }
        if rule.name in incident_by_rule:
            metadata["incident_id"] = incident_by_rule[rule.name].incident_id
            metadata["incident_owner"] = incident_by_rule[rule.name].owner
        results.append(evidence_check(rule.check_name, outcome.as_evidence, blocking=rule.blocking, metadata=metadata,
                                      description=_description(rule, outcome)))
    return results


def _required_groups(result: "fairness.FairnessAudit") -> list[dict]:
    """Each required group with its counts and minimum detectable recall gap (80 % power)."""
    from clinical_mlops.fairness import report as fairness_report

    out = []
    for r in result.required_groups().itertuples(index=False):
        gap = float(r.min_detectable_gap)
        out.append({"slice": r.slice, "group": r.group, "n": fairness_report.shown_count(r.n),
                    "n_positive": fairness_report.shown_count(r.n_positive),
                    "reference_n_positive": fairness_report.shown_count(r.reference_n_positive),
                    "min_detectable_gap": None if gap != gap else round(gap, 4)})
    return out


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
        group_name=GROUP,
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
        from clinical_mlops.fairness import report as fairness_report

        with step_failures(), warehouse.connect() as con:
            step = steps.audit_candidate(con, spec, policy=policy.load(config.policy_path), n_bootstrap=config.n_boot(),
                                         reports_dir=reports.directory, run_id=context.run.run_id, log=context.log)
        result = step.audit
        plots = [] if step.recall_gap_plot is None else [_md_image(step.recall_gap_plot, "recall gap")]
        return dg.MaterializeResult(
            metadata={
                "model": step.model_label,
                "operating_threshold": round(result.threshold, 5),
                "test_rows": result.n,
                "bootstrap": dg.MetadataValue.json({
                    "method": result.bootstrap_method, "replicates": result.n_bootstrap, "seed": result.seed,
                    "exact_max_rows": result.exact_max_rows, "score_bins": result.score_bins}),
                "policy_version": result.policy_version,
                "policy_sha256": result.policy_sha256,
                "audit_id": step.audit_id,
                "verdicts": dg.MetadataValue.json(result.verdict_counts),
                "blocking_failed": result.blocking_failed,
                "blocking_status": result.blocking_status,
                "required_groups": dg.MetadataValue.md(fairness_report.required_groups_markdown(result)),
                "summary": dg.MetadataValue.md(fairness_report.summary_markdown(result)),
                "recall_gaps": dg.MetadataValue.md(fairness_report.recall_gap_markdown(result)),
                "recall_gap_plot": dg.MetadataValue.md("\n\n".join(plots)),
                "report": dg.MetadataValue.path(str(step.report_path)),
                "incidents": dg.MetadataValue.json([i.as_metadata() for i in step.incidents.values()]),
            },
            check_results=_check_results(result, declared, step.incidents),
        )

    return fairness_report_asset


def build_root_cause(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "fairness_root_cause"],
        deps=[dg.AssetKey([spec.name, "fairness_report"])],
        group_name=GROUP,
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
            "findings": dg.MetadataValue.md("\n\n".join(c.as_markdown() for c in step.causes)),
            "conclusions": dg.MetadataValue.json({f"{c.slice}={c.group}": c.conclusion for c in step.causes}),
            "report": dg.MetadataValue.path(str(step.report_path)),
        })

    return fairness_root_cause


def _mitigated_metadata(step: "steps.MitigationStep", ui_url: str) -> dict:
    from clinical_mlops.fairness import report as fairness_report
    from clinical_mlops.core import tracking as tracking_lib

    chosen, registered, target = step.chosen, step.registered, step.target
    before, after = step.recall_gap_before, step.recall_gap_after
    return {
        "status": step.status,
        "registered_model": registered.name,
        "model_version": registered.version,
        "mlflow_run": dg.MetadataValue.url(tracking_lib.run_url(ui_url, registered.experiment_id, registered.run_id)),
        "mitigation": chosen.method,
        "mitigation_kind": chosen.kind,
        "needs_sensitive_attribute": chosen.needs_sensitive_attribute,
        "target": f"{target['slice']}={target['group']} ({target['rule']})",
        "recall_gap_before": round(before["estimate"], 4),
        "recall_gap_before_ci": f"{before['lower']:+.4f} to {before['upper']:+.4f}",
        "recall_gap_after": round(after["estimate"], 4),
        "recall_gap_after_ci": f"{after['lower']:+.4f} to {after['upper']:+.4f}",
        "chosen_because": step.comparison.reason,
        "tradeoff": dg.MetadataValue.md(fairness_report.tradeoff_markdown(step.comparison.table)),
        "verdicts_after": dg.MetadataValue.json(step.audit.verdict_counts),
        "audit_id": step.audit_id,
        "policy_sha256": step.policy_sha256,
        "report": dg.MetadataValue.path(str(step.report_path)),
    }


def build_mitigated_model(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "mitigated_model"],
        deps=[dg.AssetKey([spec.name, "fairness_report"])],
        group_name=GROUP,
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

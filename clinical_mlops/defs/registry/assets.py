"""Registry: the change-control report (challenger vs champion) and the promotion gate."""


import json

from typing import TYPE_CHECKING

import dagster as dg

from clinical_mlops.core.evidence import Evidence
from clinical_mlops.defs.partitions import cohort_code_version
from clinical_mlops.defs.checks import evidence_check
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.resources import (
    WAREHOUSE_POOL,
    PolicyResource,
    ReportsResource,
    TrackingResource,
    WarehouseResource,
)
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts

if TYPE_CHECKING:
    from clinical_mlops.registry import steps

__all__ = ["ChangeControlConfig", "PromotionConfig", "build_change_control_report", "build_promotion", "defs"]


class ChangeControlConfig(dg.Config):
    policy_path: str = ""
    """Governance policy file; empty = the policy resource's (governance/policy.yaml or CLINICAL_MLOPS_POLICY)."""
    n_bootstrap: int = 0
    """Paired bootstrap replicates; 0 = the policy's fairness.n_bootstrap."""
    seed: int = -1
    """Bootstrap seed; -1 = the policy's fairness.bootstrap_seed."""


class PromotionConfig(dg.Config):
    policy_path: str = ""
    """Governance policy file; empty = the policy resource's (governance/policy.yaml or CLINICAL_MLOPS_POLICY)."""


def _actor(context: dg.AssetExecutionContext) -> str:
    return f"dagster:{context.run.run_id}"


def _change_control_metadata(step: "steps.ChangeControlStep") -> dict:
    report, decision, challenger, champion = step.report, step.decision, step.challenger, step.champion
    auroc = report.overall("auroc")
    mitigated = {}
    if step.mitigated is not None:
        m = step.mitigated
        mitigated = {
            "mitigated_challenger": m.report.challenger.label,
            "mitigated_status": m.decision.status,
            "mitigated_decision": m.decision.summary,
            "mitigated_next_command": m.decision.next_command or "—",
            "mitigated_tradeoff": dg.MetadataValue.json(m.tradeoff.as_dict()),
            "mitigated_report_id": m.report_id,
        }
    return {
        "challenger": challenger.label,
        "champion": champion.label if champion else "none",
        "mode": decision.mode,
        "status": decision.status,
        "gate_passes": decision.passed,
        "decision": decision.summary,
        "next_command": decision.next_command or "—",
        "modification_kinds": ", ".join(m.kind for m in report.modifications) or "—",
        "envelope": report.envelope.describe() if report.envelope else "no champion: absolute criteria",
        "auroc_challenger": round(auroc["challenger"], 4),
        "auroc_challenger_ci": f"{auroc['challenger_lower']:.4f} to {auroc['challenger_upper']:.4f}",
        "auroc_delta": "—" if champion is None else round(auroc["delta"], 4),
        "auroc_delta_ci": "—" if champion is None else f"{auroc['lower']:+.4f} to {auroc['upper']:+.4f}",
        "new_fairness_failures": ", ".join(report.fairness.new_failures) or "none",
        "fairness_source": report.fairness.source,
        "fairness": report.fairness.reason,
        "open_incidents": ", ".join(decision.incidents) or "none",
        "evaluation_rows": report.evaluation_rows,
        "evaluation_ids_sha256": report.evaluation_ids_sha256,
        "report": dg.MetadataValue.md(step.markdown),
        "report_path": dg.MetadataValue.path(str(step.path)),
        "report_id": step.report_id,
        "policy_sha256": step.policy.sha256,
        "policy_version": step.policy.version,
        **mitigated,
    }


def _upstream(spec: CohortSpec) -> list[dg.AssetKey]:
    """What change control reads, so the graph (not the CLI's job order) runs it first: the evaluation,
    the fairness audit, the mitigated challenger, the model card, and the drift reports (partitioned by
    extract; an unpartitioned dependency on them is on every partition, so the newest one is in)."""
    return [dg.AssetKey([spec.name, name]) for name in
            ("model_evaluation", "fairness_report", "mitigated_model", "model_card", "drift_report")]


def build_change_control_report(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "change_control_report"],
        deps=_upstream(spec),
        group_name="registry",
        kinds={"mlflow", "duckdb"},
        code_version=cohort_code_version(spec, "2"),
        pool=WAREHOUSE_POOL,
        description=(
            f"{spec.title}: the latest candidate (aliased `challenger`) against the `champion` on the same held-out "
            "rows — paired-bootstrap metric deltas overall and per subgroup, the fairness audit's evidence per "
            "blocking rule, drift context, the diff of features / algorithm / hyperparameters / data, the policy's "
            "modification envelope, and the mitigated challenger's trade-off. Runs after the fairness report, the "
            "mitigation, the model card and the drift reports. Markdown in the reports folder and "
            "audit.change_control_reports."
        ),
    )
    def change_control_report(
        context: dg.AssetExecutionContext,
        config: ChangeControlConfig,
        warehouse: WarehouseResource,
        tracking: TrackingResource,
        reports: ReportsResource,
        policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.registry import steps

        with step_failures(), warehouse.connect() as con:
            step = steps.change_control_report(
                con, spec, policy=policy.load(config.policy_path), n_bootstrap=config.n_bootstrap or None,
                seed=None if config.seed < 0 else config.seed, actor=_actor(context),
                tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root, reports_dir=reports.directory,
            )
        context.log.info(f"{spec.name}: {step.challenger.label} vs "
                         f"{step.champion.label if step.champion else 'no champion'} — {step.decision.summary}")
        return dg.MaterializeResult(metadata=_change_control_metadata(step))

    return change_control_report


def build_promotion(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "promotion"])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([spec.name, "change_control_report"])],
        group_name="registry",
        kinds={"mlflow", "duckdb"},
        code_version=cohort_code_version(spec, "2"),
        pool=WAREHOUSE_POOL,
        description=(
            "Promotion gate under the evidence rule: any failed criterion blocks; a criterion without evidence "
            "waits as pending_approval until a named approver waives it (`clinical-mlops waive`); only evidence "
            "promotes automatically (moves the `champion` alias). A mitigated challenger waits for a named "
            "approver's `clinical-mlops promote`. Every decision goes to audit.promotion_decisions with the "
            "policy hash, the waivers relied on and the next command."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "promotion_criteria_met", asset=key, blocking=False,
                description="The challenger's evidence meets the policy's acceptance criteria (pass only on evidence "
                            "or an active waiver for what is missing). ERROR when it does not; not blocking in "
                            "Dagster's sense: the gate is the alias, which moves only on a pass, and the current "
                            "champion must go on scoring new extracts (batch_predictions follows promotion) while "
                            "a challenger is blocked or waits for approval.",
            )
        ],
    )
    def promotion(
        context: dg.AssetExecutionContext,
        config: PromotionConfig,
        warehouse: WarehouseResource,
        tracking: TrackingResource,
        policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.registry import steps

        with step_failures(), warehouse.connect() as con:
            step = steps.promote_if_accepted(con, spec, policy=policy.load(config.policy_path), actor=_actor(context),
                                             tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root)
        decision, reported, after = step.decision, step.champion_before, step.champion_after
        criteria = {c.name: f"{c.status}{' (waived)' if c.waived else ''} — {c.reason}" for c in decision.criteria}
        escalation = {} if step.escalation is None else {"escalation": dg.MetadataValue.json(step.escalation)}
        mitigated = {} if step.mitigated is None else {
            "mitigated_challenger": f"{step.mitigated.decision.model_name} v{step.mitigated.decision.model_version}",
            "mitigated_status": step.mitigated.decision.status,
            "mitigated_decision": step.mitigated.decision.summary,
            "mitigated_next_command": step.mitigated.decision.next_command or "—",
            "mitigated_decision_id": step.mitigated.decision_id,
        }
        if decision.next_command:
            context.log.warning(f"{spec.name}: {decision.status} — next: {decision.next_command}")
        if step.mitigated is not None and step.mitigated.decision.next_command:
            context.log.warning(f"{spec.name}: mitigated challenger {step.mitigated.decision.status} — to approve: "
                                f"{step.mitigated.decision.next_command}")
        return dg.MaterializeResult(
            metadata={
                "challenger": step.report.challenger.label,
                "champion_before": f"v{reported}" if reported else "none",
                "champion_after": f"v{after}" if after else "none",
                "status": decision.status,
                "promoted": step.promoted,
                "mode": decision.mode,
                "decision": decision.summary,
                "next_command": decision.next_command or "—",
                "waiver_ids": ", ".join(decision.waiver_ids) or "none",
                "open_incidents": ", ".join(decision.incidents) or "none",
                "criteria": dg.MetadataValue.json(criteria),
                "decision_id": step.decision_id,
                "report_id": step.report_id,
                "policy_sha256": step.policy.sha256,
                **mitigated,
                **escalation,
            },
            check_results=[
                evidence_check(
                    "promotion_criteria_met",
                    Evidence(decision.evidence_status, decision.summary),
                    blocking=True,
                    metadata={"status": decision.status,
                              "criteria": dg.MetadataValue.json(json.loads(decision.criteria_json())),
                              "waiver_ids": ", ".join(decision.waiver_ids) or "none",
                              "next_command": decision.next_command or "—",
                              "modification_kinds": ", ".join(decision.modification_kinds) or "—",
                              **escalation},
                )
            ],
        )

    return promotion


@dg.definitions
def defs() -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    for spec in load_all_cohorts():
        assets.append(build_change_control_report(spec))
        assets.append(build_promotion(spec))
    return dg.Definitions(assets=assets)

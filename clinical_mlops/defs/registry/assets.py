"""Registry: the change-control report (challenger vs champion) and the promotion gate."""


import json

import dagster as dg

from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.resources import (
    WAREHOUSE_POOL,
    PolicyResource,
    ReportsResource,
    TrackingResource,
    WarehouseResource,
)
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.registry import steps


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


def _change_control_metadata(step: steps.ChangeControlStep) -> dict:
    report, decision, challenger, champion = step.report, step.decision, step.challenger, step.champion
    auroc = report.overall("auroc")
    return {
        "challenger": challenger.label,
        "champion": champion.label if champion else "none",
        "mode": decision.mode,
        "gate_passes": decision.passed,
        "decision": decision.summary,
        "modification_kinds": ", ".join(m.kind for m in report.modifications) or "—",
        "envelope": report.envelope.describe() if report.envelope else "no champion: absolute criteria",
        "auroc_challenger": round(auroc["challenger"], 4),
        "auroc_delta": "—" if champion is None else round(auroc["delta"], 4),
        "auroc_delta_ci": "—" if champion is None else f"{auroc['lower']:+.4f} to {auroc['upper']:+.4f}",
        "new_fairness_failures": ", ".join(report.fairness.new_failures) or "none",
        "fairness_source": report.fairness.source,
        "evaluation_rows": report.evaluation_rows,
        "evaluation_ids_sha256": report.evaluation_ids_sha256,
        "report": dg.MetadataValue.md(step.markdown),
        "report_path": dg.MetadataValue.path(str(step.path)),
        "report_id": step.report_id,
        "policy_sha256": step.policy.sha256,
        "policy_version": step.policy.version,
    }


def build_change_control_report(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "change_control_report"],
        deps=[dg.AssetKey([spec.name, "model_evaluation"])],
        group_name="registry",
        kinds={"mlflow", "duckdb"},
        code_version="1",
        pool=WAREHOUSE_POOL,
        description=(
            f"{spec.title}: the latest candidate (aliased `challenger`) against the `champion` on the same held-out "
            "rows — paired-bootstrap metric deltas overall and per subgroup, fairness verdict changes, drift context, "
            "the diff of features / algorithm / hyperparameters / data, and the policy's modification envelope. "
            "Markdown in the reports folder and audit.change_control_reports."
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
        code_version="1",
        pool=WAREHOUSE_POOL,
        description=(
            "Promotion gate: when the acceptance criteria hold (no significant AUROC regression, no new blocking "
            "fairness failure, inside the modification envelope; absolute criteria with no champion), moves the "
            "`champion` alias to the challenger. Every decision goes to audit.promotion_decisions with the policy hash."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "promotion_criteria_met", asset=key, blocking=True,
                description="The challenger meets the policy's acceptance criteria (the gate's verdict).",
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
        with step_failures(), warehouse.connect() as con:
            step = steps.promote_if_accepted(con, spec, policy=policy.load(config.policy_path), actor=_actor(context),
                                             tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root)
        decision, reported, after = step.decision, step.champion_before, step.champion_after
        criteria = {c.name: ("pass" if c.passed else "FAIL") + f" — {c.detail}" for c in decision.criteria}
        escalation = {} if step.escalation is None else {"escalation": dg.MetadataValue.json(step.escalation)}
        return dg.MaterializeResult(
            metadata={
                "challenger": step.report.challenger.label,
                "champion_before": f"v{reported}" if reported else "none",
                "champion_after": f"v{after}" if after else "none",
                "promoted": step.promoted,
                "mode": decision.mode,
                "decision": decision.summary,
                "criteria": dg.MetadataValue.json(criteria),
                "decision_id": step.decision_id,
                "report_id": step.report_id,
                "policy_sha256": step.policy.sha256,
                **escalation,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="promotion_criteria_met",
                    passed=decision.passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=decision.summary,
                    metadata={"criteria": dg.MetadataValue.json(json.loads(decision.criteria_json())),
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

"""Registry: the change-control report (challenger vs champion) and the promotion gate."""


import json
from pathlib import Path

import dagster as dg

from clinical_mlops.registry import change_control, aliases as registry
from clinical_mlops.training import fit as training
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.defs.resources import WAREHOUSE_POOL, ReportsResource, TrackingResource, WarehouseResource
from clinical_mlops.governance.policy import Policy, load_policy


class ChangeControlConfig(dg.Config):
    policy_path: str = ""
    """Governance policy file; empty = governance/policy.yaml (or CLINICAL_MLOPS_POLICY)."""
    n_bootstrap: int = 0
    """Paired bootstrap replicates; 0 = the policy's fairness.n_bootstrap."""
    seed: int = -1
    """Bootstrap seed; -1 = the policy's fairness.bootstrap_seed."""


class PromotionConfig(dg.Config):
    policy_path: str = ""
    """Governance policy file; empty = governance/policy.yaml (or CLINICAL_MLOPS_POLICY)."""


def _policy(path: str) -> Policy:
    return load_policy(Path(path)) if path else load_policy()


def _actor(context: dg.AssetExecutionContext) -> str:
    return f"dagster:{context.run_id}"


def build_change_control_report(spec: CohortSpec) -> dg.AssetsDefinition:
    model_name = f"{spec.name}_candidate"

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
    ) -> dg.MaterializeResult:
        policy = _policy(config.policy_path)
        tracking.configure()
        with warehouse.connect() as con:
            latest = training.latest_model_version(con, spec.name, "candidate")
            if latest is None or latest["model_name"] != model_name:
                raise dg.Failure(f"no {model_name} registered: materialize {spec.name}/candidate_model first")
            version = str(latest["model_version"])
            registry.set_alias(con, model_name, registry.CHALLENGER, version, actor=_actor(context),
                               reason="latest registered candidate", policy_sha256=policy.sha256)
            champion_version = registry.current_alias(con, model_name, registry.CHAMPION)
            challenger = change_control.describe_model(con, model_name, version)
            champion = None
            if champion_version is not None:
                champion = challenger if champion_version == version else \
                    change_control.describe_model(con, model_name, champion_version)
            report = change_control.build_report(
                con, spec, policy, challenger=challenger, champion=champion,
                n_boot=config.n_bootstrap or None, seed=None if config.seed < 0 else config.seed,
            )
            decision = change_control.decide(report, policy)
            markdown = change_control.render_markdown(report, decision)
            path = reports.path(spec.name, "change_control",
                                f"{model_name}_v{version}_vs_{champion_version or 'none'}.md")
            path.write_text(markdown, encoding="utf-8")
            report_id = change_control.store_report(con, report, decision, markdown, path)
        auroc = report.overall("auroc")
        context.log.info(f"{spec.name}: {challenger.label} vs {champion.label if champion else 'no champion'} — "
                         f"{decision.summary}")
        return dg.MaterializeResult(
            metadata={
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
                "report": dg.MetadataValue.md(markdown),
                "report_path": dg.MetadataValue.path(str(path)),
                "report_id": report_id,
                "policy_sha256": policy.sha256,
                "policy_version": policy.version,
            }
        )

    return change_control_report


def build_promotion(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "promotion"])
    model_name = f"{spec.name}_candidate"

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
    ) -> dg.MaterializeResult:
        policy = _policy(config.policy_path)
        tracking.configure()
        with warehouse.connect() as con:
            stored = change_control.latest_report(con, spec.name)
            if stored is None:
                raise dg.Failure(f"no change-control report for {spec.name}: materialize change_control_report first")
            report_id, report = stored
            champion_now = registry.current_alias(con, model_name, registry.CHAMPION)
            reported = report.champion.version if report.champion else None
            if champion_now != reported:
                raise dg.Failure(f"the champion moved (v{reported} → v{champion_now}) after the change-control report; "
                                 "rematerialize change_control_report")
            if report.policy_sha256 != policy.sha256:
                raise dg.Failure("the governance policy changed after the change-control report; rematerialize it")
            # The decision first; the alias moves only if it passes.
            decision = change_control.decide(report, policy)
            promoted = False
            if decision.passed and decision.mode != "already_champion":
                change = registry.promote(con, model_name, report.challenger.version, actor=_actor(context),
                                          reason=decision.summary, policy_sha256=policy.sha256)
                promoted = change is not None
            decision_id = change_control.record_decision(
                con, cohort=spec.name, model_name=model_name, challenger_version=report.challenger.version,
                champion_version=reported, mode=decision.mode, passed=decision.passed, promoted=promoted,
                modification_kinds=decision.modification_kinds, criteria_json=decision.criteria_json(),
                reason=decision.summary, actor=_actor(context), policy_sha256=policy.sha256,
                policy_version=policy.version, report_id=report_id,
            )
            champion_after = registry.current_alias(con, model_name, registry.CHAMPION)
        criteria = {c.name: ("pass" if c.passed else "FAIL") + f" — {c.detail}" for c in decision.criteria}
        escalation = {}
        if not decision.passed:
            rule = policy.escalation.for_severity("block_promotion")
            escalation = {"escalation": dg.MetadataValue.json({
                "severity": rule.severity, "notify": [policy.owners.contact(r) for r in rule.notify],
                "within_hours": rule.within_hours, "action": rule.action})}
        return dg.MaterializeResult(
            metadata={
                "challenger": report.challenger.label,
                "champion_before": f"v{reported}" if reported else "none",
                "champion_after": f"v{champion_after}" if champion_after else "none",
                "promoted": promoted,
                "mode": decision.mode,
                "decision": decision.summary,
                "criteria": dg.MetadataValue.json(criteria),
                "decision_id": decision_id,
                "report_id": report_id,
                "policy_sha256": policy.sha256,
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

"""Audit assets: the ledger's governance records and DuckDB mirror, and per cohort the model card and
TRIPOD+AI report of each latest registered version."""


import dagster as dg

from clinical_mlops.audit import ledger
from clinical_mlops.audit.tags import TAG_CARD
from clinical_mlops.defs.partitions import cohort_code_version
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.resources import WAREHOUSE_POOL, ReportsResource, TrackingResource, WarehouseResource
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts

__all__ = ["LEDGER_VERIFIES", "audit_ledger", "build_model_card_asset", "defs"]

LEDGER_VERIFIES = dg.AssetCheckSpec(
    "ledger_chain_verifies",
    asset="audit_ledger",
    blocking=True,
    description="The ledger's hash chain, signed head and DuckDB mirror agree: no entry altered, deleted, inserted "
    "or reordered.",
)


@dg.asset(
    key="audit_ledger",
    group_name="audit",
    kinds={"duckdb"},
    code_version="1",
    pool=WAREHOUSE_POOL,
    check_specs=[LEDGER_VERIFIES],
    description="The hash-chained audit ledger's governance records (model registrations, alias changes, promotion "
    "decisions, approvals, fairness verdicts, incidents) and its DuckDB mirror audit.ledger; verified on every run.",
)
def audit_ledger(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from clinical_mlops.audit import steps

    ledger_path = ledger.default_ledger_path(warehouse.path)
    with step_failures(), warehouse.connect() as con:
        step = steps.sync_ledger(con, ledger_path)
    outcome, verification = step.outcome, step.verification
    context.log.info(verification.summary())
    return dg.MaterializeResult(
        metadata={
            "ledger": dg.MetadataValue.path(str(ledger_path)),
            "entries": verification.entries,
            "head_seq": verification.head_seq or 0,
            "head_hash": verification.last_hash or "",
            "governance_rows_recorded": outcome.appended,
            "entries_mirrored": outcome.mirrored,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="ledger_chain_verifies",
                passed=verification.ok and verification.entries > 0,  # an empty ledger is no evidence
                severity=dg.AssetCheckSeverity.ERROR,
                description=verification.summary(),
                metadata={"first_bad_seq": verification.first_bad_seq or 0,
                          "mirror_compared": verification.mirror_checked},
            )
        ],
    )


def build_model_card_asset(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "model_card"],
        deps=[dg.AssetKey([spec.name, "model_evaluation"]), dg.AssetKey([spec.name, "fairness_report"]),
              dg.AssetKey([spec.name, "mitigated_model"])],
        group_name="audit",
        kinds={"mlflow", "markdown"},
        code_version=cohort_code_version(spec, "2"),
        pool=WAREHOUSE_POOL,
        description="Model card (Mitchell et al.: nine sections, subgroup analyses with CIs, the fairness gate per rule, "
        "waivers, the previous promotion decision, the declared prediction time) and TRIPOD+AI development report "
        "(items reported only from recorded facts) for the latest candidate and baseline; written after the fairness "
        "audit and mitigation, before change control; sha256 recorded in the audit ledger and as MLflow tag "
        f"`{TAG_CARD}`.",
    )
    def model_card_asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        tracking: TrackingResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.audit import steps
        from clinical_mlops.core import tracking as tracking_lib

        ledger_path = ledger.default_ledger_path(warehouse.path)
        with step_failures(), warehouse.connect() as con:
            step = steps.write_model_cards(con, spec, ledger_path=ledger_path, reports_dir=reports.directory,
                                           tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root)
        metadata: dict[str, object] = {"ledger": dg.MetadataValue.path(str(ledger_path))}
        for written in step.cards:
            role, card, entry = written.role, written.card, written.ledger_entry
            metadata.update({
                f"{role}_model": f"{card.model_name} v{card.model_version}",
                f"{role}_model_card_sha256": card.sha256,
                f"{role}_tripod_report_sha256": card.tripod_sha256,
                f"{role}_tripod_items": f"{card.tripod_reported} reported, {card.tripod_not_reported} not reported",
                f"{role}_tripod_items_reported": card.tripod_reported,
                f"{role}_tripod_items_not_reported": card.tripod_not_reported,
                f"{role}_subgroups_with_ci": card.subgroups_with_ci,
                f"{role}_fairness": dg.MetadataValue.json(
                    {"assessed": False} if card.fairness_rules is None else
                    {"assessed": True, "rules": {rule: {"blocking": blocking, "status": status}
                                                 for rule, blocking, status in card.fairness_rules}}),
                f"{role}_waivers": list(card.waiver_criteria),
                f"{role}_model_card": dg.MetadataValue.path(str(written.paths["model_card.html"])),
                f"{role}_mlflow_model_version": dg.MetadataValue.url(
                    tracking_lib.model_version_url(tracking.ui_url, card.model_name, card.model_version)
                ),
                f"{role}_ledger_seq": entry.seq if entry is not None else "unchanged (already recorded)",
            })
        verification = step.verification
        metadata.update({
            "governance_rows_recorded": step.governance.appended,
            "ledger_entries": verification.entries,
            "ledger_verified": verification.ok,
        })
        context.log.info(f"{spec.name}: model cards written; {verification.summary()}")
        return dg.MaterializeResult(metadata=metadata)

    return model_card_asset


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[audit_ledger, *(build_model_card_asset(spec) for spec in load_all_cohorts())])

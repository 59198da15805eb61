"""Audit assets: the ledger's governance records and DuckDB mirror, and per cohort the model card and
TRIPOD+AI report of each latest registered version."""


from pathlib import Path

import dagster as dg

from clinical_mlops.audit import events as audit_events, ledger, lineage, model_card
from clinical_mlops.training import fit as training
from clinical_mlops.core import tracking as tracking_lib
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.defs.resources import WAREHOUSE_POOL, ReportsResource, TrackingResource, WarehouseResource

ROLES = ("candidate", "baseline")

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
    ledger_path = ledger.default_ledger_path(warehouse.path)
    with warehouse.connect() as con:
        try:
            outcome = audit_events.record_governance(con, ledger_path)
        except ledger.LedgerIntegrityError as exc:
            raise dg.Failure(description=f"The audit ledger does not verify; nothing was appended: {exc}",
                             allow_retries=False) from None
        lineage.create_views(con)
        verification = ledger.verify(ledger_path, con=con)
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
                passed=verification.ok,
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
        deps=[dg.AssetKey([spec.name, "model_evaluation"])],
        group_name="audit",
        kinds={"mlflow", "markdown"},
        code_version="1",
        pool=WAREHOUSE_POOL,
        description="Model card (Mitchell et al.: nine sections, subgroup analyses with CIs) and TRIPOD+AI development "
        "report for the latest candidate and baseline; sha256 recorded in the audit ledger and as MLflow tag "
        f"`{model_card.TAG_CARD}`.",
    )
    def model_card_asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        tracking: TrackingResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        ledger_path = ledger.default_ledger_path(warehouse.path)
        metadata: dict[str, object] = {"ledger": dg.MetadataValue.path(str(ledger_path))}
        with warehouse.connect() as con:
            for role in ROLES:
                version = training.latest_model_version(con, spec.name, role)
                if version is None:
                    raise dg.Failure(f"no {role} model registered for {spec.name}: materialize it first")
                card = model_card.build_model_card(con, version["model_name"], version["model_version"])
                folder = Path(reports.directory) / spec.name / "model_cards" / f"{card.model_name}_v{card.model_version}"
                paths = model_card.write_model_card(card, folder)
                entry = model_card.record_model_card(
                    card, paths, ledger_path=ledger_path, tracking_uri=tracking.tracking_uri,
                    artifact_root=tracking.artifact_root,
                )
                reported = sum(1 for item in card.tripod_items if item.applicable)
                metadata.update({
                    f"{role}_model": f"{card.model_name} v{card.model_version}",
                    f"{role}_model_card_sha256": card.sha256,
                    f"{role}_tripod_report_sha256": card.tripod_sha256,
                    f"{role}_tripod_items": f"{reported} reported, {len(card.tripod_items) - reported} N/A with reason",
                    f"{role}_subgroups_with_ci": card.subgroups_with_ci,
                    f"{role}_model_card": dg.MetadataValue.path(str(paths["model_card.html"])),
                    f"{role}_mlflow_model_version": dg.MetadataValue.url(
                        tracking_lib.model_version_url(tracking.ui_url, card.model_name, card.model_version)
                    ),
                    f"{role}_ledger_seq": entry.seq if entry is not None else "unchanged (already recorded)",
                })
            governance = audit_events.record_governance(con, ledger_path)
            lineage.create_views(con)
        verification = ledger.verify(ledger_path)
        metadata.update({
            "governance_rows_recorded": governance.appended,
            "ledger_entries": verification.entries,
            "ledger_verified": verification.ok,
        })
        context.log.info(f"{spec.name}: model cards written; {verification.summary()}")
        return dg.MaterializeResult(metadata=metadata)

    return model_card_asset


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[audit_ledger, *(build_model_card_asset(spec) for spec in load_all_cohorts())])

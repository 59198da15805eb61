"""Batch scoring: every new extract scored by the current champion, one partition per extract."""


import dagster as dg

from clinical_mlops.defs.checks import evidence_check
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.partitions import cohort_code_version, extract_partitions, validated_key
from clinical_mlops.defs.resources import WAREHOUSE_POOL, TrackingResource, WarehouseResource
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.scoring.names import champion_model_names

__all__ = ["build_batch_predictions", "defs"]


def _new_extract_condition(promotion_key: dg.AssetKey) -> dg.AutomationCondition:
    """Score an extract once it is validated (its blocking checks passed) and a promotion has run; never
    re-score old extracts because a promotion moved the champion (the promotion is ignored as a trigger),
    and a blocked challenger does not stop the champion in force from scoring new extracts (the promotion's
    blocking check is not a gate here: with no champion at all the run fails and says so)."""
    promotion = dg.AssetSelection.assets(promotion_key)
    return (
        dg.AutomationCondition.in_latest_time_window()
        & (
            dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated().ignore(promotion)
        ).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(promotion)
    ).with_label("score_new_extract")


def build_batch_predictions(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "batch_predictions"])
    promotion_key = dg.AssetKey([spec.name, "promotion"])

    @dg.asset(
        key=key,
        partitions_def=extract_partitions(spec.source),
        deps=[dg.AssetDep(validated_key(spec.source)), promotion_key],
        group_name="scoring",
        kinds={"scikit-learn", "mlflow", "duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        automation_condition=_new_extract_condition(promotion_key),
        description=(
            f"{spec.title}: the extract's in-cohort encounters scored by the champion (alias 'champion' on "
            f"{' or '.join(champion_model_names(spec.name))}; with none, the run fails and names the "
            "command that promotes), in ml.batch_predictions; each row carries model version, model card sha256, "
            "input sha256 and a UTC timestamp."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "predictions_traceable", asset=key,
                description="Every prediction row of the extract names the champion's version (as resolved at "
                "scoring time) with source champion_alias, carries the registered version's model card sha256 and a "
                "64-hex input sha256, and scores are probabilities in [0, 1].",
            )
        ],
    )
    def batch_predictions(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, tracking: TrackingResource
    ) -> dg.MaterializeResult:
        from clinical_mlops.scoring import steps
        from clinical_mlops.core import tracking as tracking_lib

        extract_id = context.partition_key
        with step_failures(), warehouse.connect() as con:
            step = steps.score_batch(con, spec, extract_id, tracking_uri=tracking.tracking_uri,
                                     artifact_root=tracking.artifact_root, run_id=context.run.run_id, log=context.log)
        ref, summary = step.model, step.summary
        run = tracking_lib.model_version_url(tracking.ui_url, ref.name, ref.version)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(summary.scores_sha256[:32]),
            metadata={
                "extract_id": extract_id,
                "rows_scored": summary.rows_scored,
                "rows_excluded": summary.rows_excluded,
                "rows_flagged": summary.rows_flagged if summary.rows_flagged is not None else -1,
                "alerts_per_100": round(summary.alerts_per_100, 2) if summary.alerts_per_100 is not None else -1.0,
                "mean_score": round(summary.mean_score, 5),
                "model": f"{ref.name} v{ref.version}",
                "model_source": ref.source,
                "model_card_sha256": ref.model_card_sha256 or "not recorded",
                "operating_threshold": ref.operating_threshold if ref.operating_threshold is not None else -1.0,
                "scores_sha256": summary.scores_sha256,
                "mlflow_model_version": dg.MetadataValue.url(run),
                "table": "ml.batch_predictions",
                "dagster/row_count": summary.rows_scored,
            },
            check_results=[
                evidence_check("predictions_traceable", step.provenance.evidence(), blocking=True,
                               metadata=step.provenance.as_metadata())
            ],
        )

    return batch_predictions


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_batch_predictions(spec) for spec in load_all_cohorts()])

"""Evaluation: AUROC, AUPRC, Brier and calibration with bootstrap CIs, overall and per subgroup."""


import base64
from typing import TYPE_CHECKING

import dagster as dg

from clinical_mlops.defs.checks import evidence_check
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.ingestion.extract_checks import extract_check_spec
from clinical_mlops.defs.partitions import cohort_code_version, extract_partitions, validated_key
from clinical_mlops.defs.resources import (
    WAREHOUSE_POOL,
    PolicyResource,
    ReportsResource,
    TrackingResource,
    WarehouseResource,
)
from clinical_mlops.evaluation.settings import EXTERNAL_CHECK, HEADLINE_METRICS, EvaluationSettings
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts

if TYPE_CHECKING:
    from clinical_mlops.evaluation import steps

__all__ = [
    "EvaluationConfig",
    "ExternalEvaluationConfig",
    "build_external_evaluation",
    "build_model_evaluation",
    "defs",
]

_DEFAULTS = EvaluationSettings()


class EvaluationConfig(dg.Config):
    n_bootstrap: int = _DEFAULTS.n_bootstrap
    seed: int = _DEFAULTS.seed
    min_group_size: int = _DEFAULTS.min_group_size
    """Groups smaller than this get point estimates but no confidence interval."""
    bootstrap_exact_max_rows: int = _DEFAULTS.exact_max_rows
    """Above this many test rows the bootstrap draws cell counts (1,000 score bins) instead of row weights."""

    def settings(self) -> EvaluationSettings:
        return EvaluationSettings(n_bootstrap=self.n_bootstrap, seed=self.seed,
                                  min_group_size=self.min_group_size,
                                  exact_max_rows=self.bootstrap_exact_max_rows)


def _metadata(step: "steps.EvaluationStep") -> dict[str, dg.MetadataValue | float | int | str]:
    metadata: dict[str, dg.MetadataValue | float | int | str] = {}
    for evaluated in step.models:
        role, result = evaluated.role, evaluated.evaluation
        metadata[f"{role}_model"] = f"{result.model_name} v{result.model_version}"
        metadata[f"{role}_bootstrap"] = dg.MetadataValue.json(result.bootstrap)
        for metric in HEADLINE_METRICS:
            estimate = result.overall(metric)
            metadata[f"{role}_{metric}"] = round(estimate.estimate, 4)
            metadata[f"{role}_{metric}_ci"] = f"{estimate.lower:.4f}–{estimate.upper:.4f}"
        images = [f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
                  for name, png in result.plots.items()]
        metadata[f"{role}_plots"] = dg.MetadataValue.md("\n\n".join(images))
        metadata[f"{role}_by_group"] = dg.MetadataValue.md(evaluated.by_group_markdown)
        metadata[f"{role}_report_dir"] = dg.MetadataValue.path(str(step.report_dir))
    return metadata


def build_model_evaluation(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "model_evaluation"],
        deps=[dg.AssetKey([spec.name, "baseline_model"]), dg.AssetKey([spec.name, "candidate_model"])],
        group_name="evaluation",
        automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        kinds={"scikit-learn", "duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description="Held-out performance of the latest baseline and candidate, overall and per sensitive attribute, "
        "with bootstrap CIs; stored in ml.evaluation_metrics.",
    )
    def model_evaluation_asset(
        context: dg.AssetExecutionContext,
        config: EvaluationConfig,
        warehouse: WarehouseResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.evaluation import steps

        with step_failures(), warehouse.connect() as con:
            step = steps.evaluate_models(con, spec, reports_dir=reports.directory, settings=config.settings())
        context.log.info(f"{spec.name}: evaluated baseline and candidate")
        return dg.MaterializeResult(metadata=_metadata(step))

    return model_evaluation_asset


class ExternalEvaluationConfig(EvaluationConfig):
    policy_path: str = ""
    """Governance policy file; empty = the policy resource's (its change_control.absolute_acceptance.min_auroc)."""


def _external_metadata(step: "steps.ExternalStep") -> dict[str, dg.MetadataValue | float | int | str]:
    metadata: dict[str, dg.MetadataValue | float | int | str] = {
        "extract_id": step.extract_id, "relation": step.relation, "model": step.model or "none",
        "model_kind": step.model_kind or "none", "evidence": step.evidence.status,
        "evidence_reason": step.evidence.reason, "report": dg.MetadataValue.path(str(step.report)),
    }
    if step.min_auroc is not None:
        metadata["min_auroc"] = step.min_auroc
    result = step.evaluation
    if result is None:
        return {**metadata, "assessed": False}
    auroc = result.overall("auroc")
    metadata.update({
        "assessed": True, "n": result.n, "n_positive": result.n_positive, "auroc": round(auroc.estimate, 4),
        "auroc_lower": round(auroc.lower, 4), "auroc_upper": round(auroc.upper, 4),
        "recall": round(result.overall("tpr").estimate, 4), "precision": round(result.overall("precision").estimate, 4),
        "brier": round(result.overall("brier").estimate, 4),
        "calibration_in_the_large": round(result.overall("calibration_in_the_large").estimate, 4),
        "operating_threshold": result.threshold,
    })
    held = result.held_out.get("auroc")
    if held is not None:
        metadata.update({"held_out_auroc": round(held.estimate, 4), "held_out_auroc_lower": round(held.lower, 4),
                         "held_out_auroc_upper": round(held.upper, 4)})
    else:
        metadata["held_out_auroc"] = "not recorded"
    return metadata


def build_external_evaluation(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "external_evaluation"])

    @dg.asset(
        key=key,
        partitions_def=extract_partitions(spec.source),
        deps=[dg.AssetKey([spec.name, "encounter_features"]), validated_key(spec.source)],
        group_name="drift",  # runs with the drift report in drift_job_<source>, partitioned by extract
        kinds={"scikit-learn", "duckdb"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description=(
            f"{spec.title}: the champion (else the latest candidate) scored on one extract it was not trained on — "
            "an external site's or a later one — realised AUROC, recall and precision at the operating threshold, "
            "Brier and calibration with bootstrap CIs, overall and per sensitive attribute (ml.external_evaluations), "
            "beside the version's held-out figures; a Markdown report."
        ),
        check_specs=[
            extract_check_spec(
                EXTERNAL_CHECK, asset=key, source=spec.source, blocking=False,
                description="Per extract: the external AUROC interval lies at or above the policy's min_auroc (pass), "
                "wholly below it (fail), or straddles it (insufficient evidence, e.g. a wide interval at small n); "
                "insufficient evidence too when not assessed (no model, trained on the extract, one class only).",
            ),
        ],
    )
    def external_evaluation_asset(
        context: dg.AssetExecutionContext,
        config: ExternalEvaluationConfig,
        warehouse: WarehouseResource,
        tracking: TrackingResource,
        reports: ReportsResource,
        policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.evaluation import steps

        extract_id = context.partition_key
        min_auroc = float(policy.load(config.policy_path).change_control.absolute_acceptance.min_auroc)
        with step_failures(), warehouse.connect() as con:
            step = steps.evaluate_external(
                con, spec, extract_id, tracking_uri=tracking.tracking_uri, artifact_root=tracking.artifact_root,
                reports_dir=reports.directory, settings=config.settings(), min_auroc=min_auroc,
            )
        context.log.info(f"{spec.name} on {extract_id}: {step.evidence.status} — {step.evidence.reason}")
        metadata = _external_metadata(step)
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[evidence_check(EXTERNAL_CHECK, step.evidence, blocking=False,
                                          metadata={k: metadata[k] for k in ("extract_id", "relation", "model")})],
        )

    return external_evaluation_asset


@dg.definitions
def defs() -> dg.Definitions:
    specs = load_all_cohorts()
    return dg.Definitions(assets=[*(build_model_evaluation(spec) for spec in specs),
                                  *(build_external_evaluation(spec) for spec in specs)])

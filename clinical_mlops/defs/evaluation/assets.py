"""Evaluation: AUROC, AUPRC, Brier and calibration with bootstrap CIs, overall and per subgroup."""


import base64

import dagster as dg

from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.resources import WAREHOUSE_POOL, ReportsResource, WarehouseResource
from clinical_mlops.evaluation import steps
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts

_DEFAULTS = steps.EvaluationSettings()


class EvaluationConfig(dg.Config):
    n_bootstrap: int = _DEFAULTS.n_bootstrap
    seed: int = _DEFAULTS.seed
    min_group_size: int = _DEFAULTS.min_group_size
    """Groups smaller than this get point estimates but no confidence interval."""
    bootstrap_exact_max_rows: int = _DEFAULTS.exact_max_rows
    """Above this many test rows the bootstrap draws cell counts (1,000 score bins) instead of row weights."""

    def settings(self) -> steps.EvaluationSettings:
        return steps.EvaluationSettings(n_bootstrap=self.n_bootstrap, seed=self.seed,
                                        min_group_size=self.min_group_size,
                                        exact_max_rows=self.bootstrap_exact_max_rows)


def _metadata(step: steps.EvaluationStep) -> dict[str, dg.MetadataValue | float | int | str]:
    metadata: dict[str, dg.MetadataValue | float | int | str] = {}
    for evaluated in step.models:
        role, result = evaluated.role, evaluated.evaluation
        metadata[f"{role}_model"] = f"{result.model_name} v{result.model_version}"
        metadata[f"{role}_bootstrap"] = dg.MetadataValue.json(result.bootstrap)
        for metric in steps.HEADLINE_METRICS:
            estimate = result.overall(metric)
            metadata[f"{role}_{metric}"] = round(estimate.estimate, 4)
            metadata[f"{role}_{metric}_ci"] = f"{estimate.lower:.4f}–{estimate.upper:.4f}"
        images = [f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
                  for name, png in result.plots.items()]
        metadata[f"{role}_plots"] = dg.MetadataValue.md("\n\n".join(images))
        metadata[f"{role}_by_group"] = dg.MetadataValue.md(steps.by_group_markdown(result))
        metadata[f"{role}_report_dir"] = dg.MetadataValue.path(str(step.report_dir))
    return metadata


def build_model_evaluation(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "model_evaluation"],
        deps=[dg.AssetKey([spec.name, "baseline_model"]), dg.AssetKey([spec.name, "candidate_model"])],
        group_name="evaluation",
        automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed(),
        kinds={"scikit-learn", "duckdb"},
        code_version="1",
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
        with step_failures(), warehouse.connect() as con:
            step = steps.evaluate_models(con, spec, reports_dir=reports.directory, settings=config.settings())
        context.log.info(f"{spec.name}: evaluated baseline and candidate")
        return dg.MaterializeResult(metadata=_metadata(step))

    return model_evaluation_asset


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_model_evaluation(spec) for spec in load_all_cohorts()])

"""Evaluation: AUROC, AUPRC, Brier and calibration with bootstrap CIs, overall and per subgroup."""


import base64

import dagster as dg

from clinical_mlops.evaluation import models as model_evaluation
from clinical_mlops.training import fit as training
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.defs.resources import WAREHOUSE_POOL, ReportsResource, WarehouseResource

HEADLINE_METRICS = ("auroc", "auprc", "brier", "ece")


class EvaluationConfig(dg.Config):
    n_bootstrap: int = 200
    seed: int = 11
    min_group_size: int = 100
    """Groups smaller than this get point estimates but no confidence interval."""
    bootstrap_exact_max_rows: int = 250_000
    """Above this many test rows the bootstrap draws cell counts (1,000 score bins) instead of row weights."""


def _markdown_table(evaluation: model_evaluation.ModelEvaluation) -> str:
    rows = ["| attribute | group | n | metric | estimate | 95% CI |", "|---|---|---|---|---|---|"]
    table = evaluation.table[evaluation.table["metric"].isin(HEADLINE_METRICS[:2])]
    for r in table.itertuples(index=False):
        ci = "—" if r.lower != r.lower else f"{r.lower:.3f}–{r.upper:.3f}"
        rows.append(f"| {r.attribute} | {r.group} | {r.n} | {r.metric} | {r.estimate:.3f} | {ci} |")
    return "\n".join(rows)


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
        metadata: dict[str, dg.MetadataValue | float | int | str] = {}
        with warehouse.connect() as con:
            for role in ("baseline", "candidate"):
                version = training.latest_model_version(con, spec.name, role)
                if version is None:
                    raise dg.Failure(f"no {role} model registered for {spec.name}: materialize it first")
                result = model_evaluation.evaluate_model(
                    con, spec, model_name=version["model_name"], model_version=version["model_version"],
                    threshold=version["operating_threshold"], n_boot=config.n_bootstrap, seed=config.seed,
                    min_group_size=config.min_group_size, exact_max_rows=config.bootstrap_exact_max_rows,
                )
                metadata[f"{role}_model"] = f"{result.model_name} v{result.model_version}"
                metadata[f"{role}_bootstrap"] = dg.MetadataValue.json(result.bootstrap)
                for metric in HEADLINE_METRICS:
                    estimate = result.overall(metric)
                    metadata[f"{role}_{metric}"] = round(estimate.estimate, 4)
                    metadata[f"{role}_{metric}_ci"] = f"{estimate.lower:.4f}–{estimate.upper:.4f}"
                images = []
                for name, png in result.plots.items():
                    path = reports.path(spec.name, f"{result.model_name}_v{result.model_version}_{name}.png")
                    path.write_bytes(png)
                    images.append(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
                metadata[f"{role}_plots"] = dg.MetadataValue.md("\n\n".join(images))
                metadata[f"{role}_by_group"] = dg.MetadataValue.md(_markdown_table(result))
                metadata[f"{role}_report_dir"] = dg.MetadataValue.path(str(reports.path(spec.name, "x").parent))
        context.log.info(f"{spec.name}: evaluated baseline and candidate")
        return dg.MaterializeResult(metadata=metadata)

    return model_evaluation_asset


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_model_evaluation(spec) for spec in load_all_cohorts()])

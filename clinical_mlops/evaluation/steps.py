"""What the evaluation asset does, as a plain function (no Dagster): ``[cohort, model_evaluation]``.

:class:`EvaluationSettings` holds the evaluation's defaults, the one place they are defined
(the Dagster config and the benchmark take theirs from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core.steps import StepError, report_path
from clinical_mlops.evaluation import metrics, models
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.training import fit

__all__ = ["HEADLINE_METRICS", "ROLES", "EvaluatedModel", "EvaluationSettings", "EvaluationStep",
           "by_group_markdown", "evaluate_models"]

ROLES = ("baseline", "candidate")
HEADLINE_METRICS = ("auroc", "auprc", "brier", "ece")


@dataclass(frozen=True)
class EvaluationSettings:
    n_bootstrap: int = 200
    seed: int = 11
    min_group_size: int = 100
    """Groups smaller than this get point estimates but no confidence interval."""
    exact_max_rows: int = metrics.EXACT_MAX_ROWS
    """Above this many test rows the bootstrap draws cell counts (score bins) instead of row weights."""


@dataclass(frozen=True)
class EvaluatedModel:
    role: str
    evaluation: models.ModelEvaluation
    plot_paths: dict[str, Path]
    """Each plot's PNG in the reports folder, by plot name."""


@dataclass(frozen=True)
class EvaluationStep:
    models: tuple[EvaluatedModel, ...]
    report_dir: Path


def evaluate_models(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    reports_dir: Path | str,
    settings: EvaluationSettings = EvaluationSettings(),
    plots: bool = True,
) -> EvaluationStep:
    """``[cohort, model_evaluation]``: held-out performance of the latest baseline and candidate, overall
    and per sensitive attribute, with bootstrap CIs, stored in ``ml.evaluation_metrics``; ROC and
    calibration plots written to ``reports_dir/<cohort>/``."""
    evaluated = []
    for role in ROLES:
        version = fit.latest_model_version(con, spec.name, role)
        if version is None:
            raise StepError(f"no {role} model registered for {spec.name}: materialize it first")
        result = models.evaluate_model(
            con, spec, model_name=version["model_name"], model_version=version["model_version"],
            threshold=version["operating_threshold"], n_boot=settings.n_bootstrap, seed=settings.seed,
            min_group_size=settings.min_group_size, exact_max_rows=settings.exact_max_rows, plots=plots,
        )
        paths = {}
        for name, png in result.plots.items():
            paths[name] = report_path(reports_dir, spec.name, f"{result.model_name}_v{result.model_version}_{name}.png")
            paths[name].write_bytes(png)
        evaluated.append(EvaluatedModel(role, result, paths))
    report_dir = Path(reports_dir) / spec.name
    report_dir.mkdir(parents=True, exist_ok=True)
    return EvaluationStep(models=tuple(evaluated), report_dir=report_dir)


def by_group_markdown(evaluation: models.ModelEvaluation) -> str:
    """AUROC and AUPRC per group with their 95% CIs, as a Markdown table."""
    rows = ["| attribute | group | n | metric | estimate | 95% CI |", "|---|---|---|---|---|---|"]
    table = evaluation.table[evaluation.table["metric"].isin(HEADLINE_METRICS[:2])]
    for r in table.itertuples(index=False):
        ci = "—" if r.lower != r.lower else f"{r.lower:.3f}–{r.upper:.3f}"
        rows.append(f"| {r.attribute} | {r.group} | {r.n} | {r.metric} | {r.estimate:.3f} | {ci} |")
    return "\n".join(rows)

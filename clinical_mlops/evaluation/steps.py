"""What the evaluation asset does, as a plain function (no Dagster): ``[cohort, model_evaluation]``.

:class:`EvaluationSettings` holds the evaluation's defaults, the one place they are defined
(:mod:`.settings`, re-exported here; the Dagster config and the benchmark take theirs from there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import tracking
from clinical_mlops.core.evidence import INSUFFICIENT, Evidence, at_least
from clinical_mlops.core.steps import StepError, report_path
from clinical_mlops.evaluation import external, models
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.evaluation.settings import EXTERNAL_CHECK, HEADLINE_METRICS, ROLES, EvaluationSettings
from clinical_mlops.scoring import champion
from clinical_mlops.training import fit

__all__ = ["EXTERNAL_CHECK", "HEADLINE_METRICS", "ROLES", "EvaluatedModel", "EvaluationSettings", "EvaluationStep",
           "ExternalStep", "by_group_markdown", "evaluate_external", "evaluate_models"]

@dataclass(frozen=True)
class EvaluatedModel:
    role: str
    evaluation: models.ModelEvaluation
    plot_paths: dict[str, Path]
    """Each plot's PNG in the reports folder, by plot name."""

    @property
    def by_group_markdown(self) -> str:
        """AUROC and AUPRC per group with their 95% CIs (:func:`by_group_markdown`)."""
        return by_group_markdown(self.evaluation)


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


# ---------------------------------------------------------------------------------------------
# [cohort, external_evaluation]: the champion (else the latest candidate) on one later extract
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExternalStep:
    """One extract's external evaluation, or why there is none (``evaluation`` None, insufficient evidence)."""

    cohort: str
    extract_id: str
    relation: str
    """external_site (the contract says another site's) or later_extract."""
    evidence: Evidence
    """``external_performance_assessed``: the AUROC interval against ``min_auroc``, or why not assessed."""
    report: Path
    model_name: str | None = None
    model_version: str | None = None
    model_kind: str | None = None
    """champion | latest_candidate (None when there is no model)."""
    evaluation: external.ExternalEvaluation | None = None
    min_auroc: float | None = None

    @property
    def model(self) -> str | None:
        return None if self.model_name is None else f"{self.model_name} v{self.model_version}"


def _model_row(con: duckdb.DuckDBPyConnection, name: str, version: str) -> dict | None:
    cursor = con.execute("SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?", [name, version])
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row))


def _chosen_model(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> tuple[champion.ModelRef | None, str, str]:
    """(model, kind, why not) — the champion, else the latest registered candidate, else none."""
    try:
        return champion.resolve_champion(spec.name), "champion", ""
    except champion.AmbiguousChampionError as exc:
        return None, "", str(exc)
    except champion.NoModelError:
        pass
    latest = fit.latest_model_version(con, spec.name, "candidate")
    if latest is None:
        return None, "", f"no model of {spec.name} is registered (no champion, no candidate): train one first"
    ref = champion.ModelRef(name=latest["model_name"], version=str(latest["model_version"]),
                            run_id=latest["mlflow_run_id"], source="latest_candidate", model_card_sha256=None,
                            operating_threshold=float(latest["operating_threshold"]))
    return ref, "latest_candidate", ""


def _verdict(evaluation: external.ExternalEvaluation, min_auroc: float | None) -> Evidence:
    auroc = evaluation.overall("auroc")
    what = f"external AUROC {auroc.estimate:.3f} on {evaluation.extract_id}"
    if min_auroc is None:
        return Evidence(INSUFFICIENT, f"{what}: no minimum AUROC to judge it against")
    found = at_least(auroc.lower, auroc.upper, min_auroc, what=what)
    if found.status == INSUFFICIENT:
        small = f"n = {evaluation.n} with {evaluation.n_positive} positives"
        return Evidence(INSUFFICIENT, f"{found.reason} ({small}: a wide interval at small n settles nothing)")
    return found


def evaluate_external(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    extract_id: str,
    *,
    tracking_uri: str,
    artifact_root: Path | str,
    reports_dir: Path | str,
    settings: EvaluationSettings = EvaluationSettings(),
    min_auroc: float | None = None,
) -> ExternalStep:
    """``[cohort, external_evaluation]``: the champion (else the latest candidate, ``model_kind`` says which)
    scored on one extract it was not trained on, metrics with CIs in ``ml.external_evaluations`` and a
    Markdown report in ``reports_dir/<cohort>/external/<extract>.md``.

    Insufficient evidence, with the reason, and nothing stored when there is no model, when the model
    was trained on the extract, or when the extract has no in-cohort row or a single class.
    """
    relation = "external_site" if extract_id in features.external_extracts(con, spec) else "later_extract"
    report = report_path(reports_dir, spec.name, "external", f"{extract_id}.md")

    def refused(reason: str, **model) -> ExternalStep:
        evidence = Evidence(INSUFFICIENT, reason)
        report.write_text(external.not_assessed_markdown(spec.name, extract_id, evidence))
        return ExternalStep(spec.name, extract_id, relation, evidence, report, min_auroc=min_auroc, **model)

    tracking.configure(tracking_uri, Path(artifact_root))
    ref, kind, why = _chosen_model(con, spec)
    if ref is None:
        return refused(why)
    chosen = {"model_name": ref.name, "model_version": ref.version, "model_kind": kind}
    row = _model_row(con, ref.name, ref.version)
    if row is None:
        return refused(f"{ref.name} v{ref.version} has no ml.model_versions record: the extracts it was trained "
                       "on are unknown", **chosen)
    if extract_id in {e["extract_id"] for e in json.loads(row["input_extracts_json"])}:
        return refused(f"not an external evaluation: the model was trained on this extract ({ref.name} "
                       f"v{ref.version} lists {extract_id} among its training inputs)", **chosen)
    n, positives = external.extract_counts(con, spec, extract_id)
    if n == 0:
        return refused(f"{extract_id} has no in-cohort rows in {spec.features_table}: materialize "
                       f"{spec.name}/encounter_features after validating it", **chosen)
    if positives in (0, n):
        return refused(f"{extract_id} has {n} in-cohort rows and {positives} positives: AUROC needs both classes",
                       **chosen)
    model = champion.load_scoring_model(ref, spec)
    evaluation = external.evaluate_extract(
        con, spec, extract_id, model_name=ref.name, model_version=ref.version, model_kind=kind, relation=relation,
        threshold=float(row["operating_threshold"]), scores_fn=model.score, settings=settings,
    )
    evidence = _verdict(evaluation, min_auroc)
    report.write_text(external.report_markdown(evaluation, evidence=evidence, target=f"positives ({spec.target_column})",
                                               attributes=spec.sensitive_attributes))
    return ExternalStep(spec.name, extract_id, relation, evidence, report, evaluation=evaluation,
                        min_auroc=min_auroc, **chosen)

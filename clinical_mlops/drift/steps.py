"""What the drift asset does, as a plain function (no Dagster): ``[cohort, drift_report]``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import tracking
from clinical_mlops.core.steps import LOG, StepError, StepLog, escalation
from clinical_mlops.drift import report as drift_report, statistics as drift
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy
from clinical_mlops.registry import aliases as registry
from clinical_mlops.training.modelling import registered_model_name

__all__ = ["BLOCKING_SEVERITIES", "DriftHtml", "DriftStep", "assess_drift", "statistics_markdown"]

BLOCKING_SEVERITIES = ("block_promotion", "open_incident")
"""Policy severities whose drift check blocks what follows (ERROR); any other warns."""


@dataclass(frozen=True)
class DriftHtml:
    """The Evidently report rendered on the policy's seeded sample."""

    path: Path
    sha256: str
    sample: str
    """``n/N reference, m/M current rows (seed s)``."""
    seconds: float
    drifted_columns: int | None


@dataclass(frozen=True)
class DriftStep:
    result: drift.DriftResult
    settings: drift.DriftSettings
    reference: drift.Reference
    current_in_reference: bool
    prediction_note: str
    statistics_seconds: float
    prediction_seconds: float | None
    html: DriftHtml | None
    drift_run_id: str
    policy_sha256: str
    escalation: dict | None
    """The policy's escalation rule when the dataset drifts, else None."""

    @property
    def blocking(self) -> bool:
        return self.settings.severity in BLOCKING_SEVERITIES


def assess_drift(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    extract_id: str,
    *,
    policy: Policy,
    tracking_uri: str,
    artifact_root: Path | str,
    prediction_drift: bool = True,
    html_path: Path | None = None,
    run_id: str | None = None,
    log: StepLog = LOG,
) -> DriftStep:
    """``[cohort, drift_report]``: one extract's features, sensitive attributes, scores and labels against
    the reference model's training population — KS / chi-square with multiple-comparison correction and
    PSI on the full data in DuckDB, stored in ``monitoring.drift_*``.

    With ``prediction_drift`` the extract is scored in chunks by the reference model and compared with
    its held-out scores; if that fails the data-drift verdict stands and the note says why. With
    ``html_path`` the Evidently report is rendered there on the policy's seeded sample. An extract with
    no rows, or no reference population, raises :class:`StepError`.
    """
    tracking.configure(tracking_uri, Path(artifact_root))
    settings = drift.DriftSettings.from_policy(policy.drift)
    model_name = registered_model_name(spec.name, "candidate")
    categorical = list(dict.fromkeys([*spec.categorical_features, *spec.sensitive_attributes]))
    numeric = list(spec.numeric_features)
    columns = [*numeric, *categorical, "label"]
    reference, reference_sql, reference_params = drift.select_reference(con, spec.name, spec.features_table,
                                                                        extract_id, model_name)
    current_sql, current_params = drift.current_population(spec.features_table, extract_id)
    started = time.perf_counter()
    n_ref, n_cur = drift.stage_populations(
        con, reference_sql, current_sql, columns, reference_params=reference_params, current_params=current_params,
        unit="patient_key", order_key="encounter_id",
    )
    if n_cur == 0:
        raise StepError(f"{extract_id} has no rows in {spec.features_table}: materialize "
                        f"{spec.name}/encounter_features after validating the extract.")
    if n_ref == 0:
        raise StepError(f"no reference population for {extract_id} ({reference.kind}); train a model first.")
    result = drift.compare(con, numeric=numeric, categorical=categorical, settings=settings, label="label")
    statistics_seconds = time.perf_counter() - started
    prediction_note, prediction_seconds = "not assessed", None
    if prediction_drift and reference.model_version is not None:
        started = time.perf_counter()
        try:
            model = registry.load_scoring_model(model_name, reference.model_version)
            current_scores = drift.scores_in_chunks(con, current_sql, current_params, model.predict_risk)
            reference_scores = con.execute(
                "SELECT score FROM ml.predictions WHERE model_name = ? AND model_version = ? AND split = 'test'",
                [model_name, reference.model_version],
            ).fetchnumpy()["score"]
            threshold = drift.model_record(con, model_name, reference.model_version)["operating_threshold"]
            prediction, rates = drift.score_drift(reference_scores, current_scores, threshold=float(threshold),
                                                  settings=settings)
            result = drift.with_prediction(result, prediction, rates)
            prediction_note = prediction.summary
        except Exception as exc:  # the data-drift verdict stands without the scores
            prediction_note = f"not assessed: {type(exc).__name__}"
            log.warning(f"prediction drift not assessed for {extract_id}: {type(exc).__name__}")
        prediction_seconds = time.perf_counter() - started
    html, report_file = None, None
    details: dict = {}
    if html_path is not None:
        sample = drift_report.sampled_frames(con, drift.STAGE_TABLE, columns, sample_rows=settings.sample_rows,
                                             seed=settings.sample_seed)
        rendered = drift_report.render_html(sample.reference, sample.current, numeric=numeric,
                                            categorical=[*categorical, "label"], path=html_path,
                                            drift_share=settings.dataset_drift_share)
        report_file = drift.ReportFile(str(html_path), rendered.sha256, settings.sample_rows, settings.sample_seed)
        html = DriftHtml(
            path=html_path, sha256=rendered.sha256, seconds=rendered.seconds, drifted_columns=rendered.drifted_columns,
            sample=f"{len(sample.reference)}/{sample.reference_total} reference, "
                   f"{len(sample.current)}/{sample.current_total} current rows (seed {sample.seed})",
        )
        details = {"evidently_seconds": round(html.seconds, 3),
                   "evidently_drifted_columns": html.drifted_columns if html.drifted_columns is not None else -1}
    current_in_reference = extract_id in reference.extracts
    drift_run_id = drift.store(
        con, result, cohort=spec.name, extract_id=extract_id, reference=reference, policy_sha256=policy.sha256,
        report=report_file,
        details={"dagster_run_id": run_id, "current_in_reference": current_in_reference,
                 "statistics_seconds": round(statistics_seconds, 3), **details},
    )
    con.execute(f"DROP TABLE IF EXISTS {drift.STAGE_TABLE}")
    return DriftStep(
        result=result, settings=settings, reference=reference, current_in_reference=current_in_reference,
        prediction_note=prediction_note, statistics_seconds=statistics_seconds,
        prediction_seconds=prediction_seconds, html=html, drift_run_id=drift_run_id, policy_sha256=policy.sha256,
        escalation=escalation(policy, settings.severity) if result.dataset_drift else None,
    )


def statistics_markdown(result: drift.DriftResult, limit: int = 15) -> str:
    """The most drifted features (test, statistic, adjusted p, PSI, verdicts) as a Markdown table."""
    rows = ["| feature | test | statistic | adj. p | PSI | drifted | material | shift |",
            "|---|---|---|---|---|---|---|---|"]
    for f in result.ranked()[:limit]:
        p = "—" if f.p_value_adjusted != f.p_value_adjusted else f"{f.p_value_adjusted:.2g}"
        rows.append(f"| {f.name} | {f.test} | {f.statistic:.4f} | {p} | {f.psi:.3f} | "
                    f"{'yes' if f.drifted else 'no'} | {'yes' if f.material else 'no'} | {f.summary} |")
    return "\n".join(rows)

"""What the drift asset does, as a plain function (no Dagster): ``[cohort, drift_report]``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import tracking
from clinical_mlops.core.evidence import FAIL, INSUFFICIENT, PASS, Evidence
from clinical_mlops.core.steps import LOG, StepError, StepLog, escalation
from clinical_mlops.drift import report as drift_report, statistics as drift
from clinical_mlops.drift.settings import DRIFT_CHECK
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import BLOCKING_SEVERITIES, Policy
from clinical_mlops.monitoring import incidents
from clinical_mlops.registry import aliases as registry
from clinical_mlops.training.modelling import registered_model_name

__all__ = ["BLOCKING_SEVERITIES", "DRIFT_CHECK", "DriftHtml", "DriftStep", "assess_drift", "drift_incident",
           "statistics_markdown"]

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
    result: drift.DriftResult | None
    """None when there was nothing to compare against (see ``dataset``'s reason)."""
    settings: drift.DriftSettings
    reference: drift.Reference
    current_in_reference: bool
    prediction_note: str
    statistics_seconds: float
    prediction_seconds: float | None
    html: DriftHtml | None
    drift_run_id: str | None
    policy_sha256: str
    escalation: dict | None
    """The policy's escalation rule when the dataset drifts, else None."""
    dataset: Evidence
    """``no_dataset_drift``: pass, fail (the dataset drifts) or insufficient evidence, with the reason."""
    prediction: Evidence
    """``prediction_distribution_stable``: pass, fail, or insufficient evidence (not assessed, and why)."""
    incident: incidents.Incident | None = None
    """The ``warn`` (policy drift severity) incident opened for this cohort and extract when the dataset drifts."""
    newest_model_trained_on_extract: bool = False
    """Whether the cohort's newest registered model was trained on this extract (then retraining cannot help)."""

    @property
    def blocking(self) -> bool:
        return self.settings.severity in BLOCKING_SEVERITIES

    @property
    def statistics_markdown(self) -> str:
        """The most drifted features as a Markdown table (:func:`statistics_markdown`); empty without a result."""
        return statistics_markdown(self.result) if self.result is not None else ""


def _dataset_evidence(result: drift.DriftResult) -> Evidence:
    if result.features_tested == 0:
        return Evidence(INSUFFICIENT, "no feature could be tested")
    share = (f"{len(result.drifted_features)}/{result.features_tested} features drifted ({result.drift_share:.0%}; "
             f"dataset drift at {result.settings.dataset_drift_share:.0%})")
    if result.dataset_drift:
        return Evidence(FAIL, f"{share}: {', '.join(result.drifted_features)}")
    return Evidence(PASS, share + (f": {', '.join(result.drifted_features)}" if result.drifted_features else ""))


def _prediction_evidence(result: drift.DriftResult, note: str) -> Evidence:
    if result.prediction is None:
        return Evidence(INSUFFICIENT, note)
    return Evidence(FAIL if result.prediction.drifted else PASS, note)


def drift_incident(con: duckdb.DuckDBPyConnection, *, policy: Policy, cohort: str, extract_id: str,
                   reference: drift.Reference, evidence: dict) -> incidents.Incident:
    """The incident for dataset drift in one extract of one cohort, opened once per (cohort, extract).

    Severity, owner and deadline come from the policy's escalation rule for its drift severity. An
    incident already recorded for the same cohort and extract (open or closed) is returned, not repeated.
    """
    check = f"{cohort}/drift_report:{DRIFT_CHECK}[{extract_id}]"
    recorded = incidents.list_incidents(con, cohort=cohort)
    earlier = recorded[recorded["check"] == check] if not recorded.empty else recorded
    model = f"{reference.model_name} v{reference.model_version}" if reference.model_name else f"({reference.kind})"
    if not earlier.empty:
        row = earlier.iloc[0]
        return incidents.Incident(
            incident_id=row["incident_id"], opened_at=row["opened_at"], severity=row["severity"], owner=row["owner"],
            owner_contact=row["owner_contact"], due_by=row["due_by"], cohort=row["cohort"], model=row["model"],
            check=row["check"], status=row["status"], created=False)
    return incidents.open_incident(con, policy=policy, severity=policy.drift.severity, cohort=cohort, model=model,
                                   check=check, evidence=evidence)


def _trained_on(con: duckdb.DuckDBPyConnection, model_name: str, extract_id: str) -> bool:
    newest = drift.model_record(con, model_name, None)
    return newest is not None and extract_id in {e["extract_id"] for e in json.loads(newest["input_extracts_json"])}


def _prediction_drift(con: duckdb.DuckDBPyConnection, result: drift.DriftResult, *, model_name: str,
                      reference: drift.Reference, current_sql: str, current_params: list,
                      settings: drift.DriftSettings) -> tuple[drift.DriftResult, str]:
    """Score the extract with the reference model and compare with its held-out scores.

    What cannot be assessed (no reference model, no held-out scores) is said in the note and the
    check reports insufficient evidence; an error while scoring fails the step, never a pass.
    """
    if reference.model_version is None:
        return result, f"not assessed: no model to score the extract (reference: {reference.kind})"
    reference_scores = con.execute(
        "SELECT score FROM ml.predictions WHERE model_name = ? AND model_version = ? AND split = 'test'",
        [model_name, reference.model_version],
    ).fetchnumpy()["score"]
    if len(reference_scores) == 0:
        return result, f"not assessed: no held-out scores of {model_name} v{reference.model_version} to compare with"
    model = registry.load_scoring_model(model_name, reference.model_version)
    current_scores = drift.scores_in_chunks(con, current_sql, current_params, model.predict_risk)
    threshold = drift.model_record(con, model_name, reference.model_version)["operating_threshold"]
    prediction, rates = drift.score_drift(reference_scores, current_scores, threshold=float(threshold),
                                          settings=settings)
    return drift.with_prediction(result, prediction, rates), prediction.summary


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
    its held-out scores; without a model or held-out scores the prediction check has insufficient evidence
    (the note says why), and an error while scoring fails the step. With ``html_path`` the Evidently
    report is rendered there on the policy's seeded sample. With no reference population both checks
    have insufficient evidence; an extract with no feature rows raises :class:`StepError`. Dataset drift
    opens an incident at the policy's drift severity, once per cohort and extract (:func:`drift_incident`).
    """
    tracking.configure(tracking_uri, Path(artifact_root))
    settings = drift.DriftSettings.from_policy(policy.drift)
    model_name = registered_model_name(spec.name, "candidate")
    categorical = list(dict.fromkeys([*spec.categorical_features, *spec.sensitive_attributes]))
    numeric = list(spec.numeric_features)
    columns = [*numeric, *categorical, "label"]
    reference, reference_sql, reference_params = drift.select_reference(con, spec.name, spec.features_table,
                                                                        extract_id, model_name, spec.source)
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
        con.execute(f"DROP TABLE IF EXISTS {drift.STAGE_TABLE}")
        reason = (f"no reference population for {extract_id} ({reference.kind}: no trained model and no earlier "
                  "extract): train a model, then assess drift again")
        return DriftStep(
            result=None, settings=settings, reference=reference, current_in_reference=False,
            prediction_note=f"not assessed: {reason}", statistics_seconds=time.perf_counter() - started,
            prediction_seconds=None, html=None, drift_run_id=None, policy_sha256=policy.sha256, escalation=None,
            dataset=Evidence(INSUFFICIENT, reason), prediction=Evidence(INSUFFICIENT, reason),
            newest_model_trained_on_extract=_trained_on(con, model_name, extract_id),
        )
    result = drift.compare(con, numeric=numeric, categorical=categorical, settings=settings, label="label")
    statistics_seconds = time.perf_counter() - started
    prediction_note, prediction_seconds = "not assessed: prediction drift is switched off (prediction_drift: false)", None
    if prediction_drift:
        started = time.perf_counter()
        result, prediction_note = _prediction_drift(con, result, model_name=model_name, reference=reference,
                                                    current_sql=current_sql, current_params=current_params,
                                                    settings=settings)
        prediction_seconds = time.perf_counter() - started
        if result.prediction is None:
            log.warning(f"prediction drift for {extract_id}: {prediction_note}")
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
    dataset = _dataset_evidence(result)
    incident = None
    if result.dataset_drift:
        incident = drift_incident(con, policy=policy, cohort=spec.name, extract_id=extract_id, reference=reference,
                                  evidence={"extract_id": extract_id, "drift_run_id": drift_run_id,
                                            "drift_share": round(result.drift_share, 4),
                                            "dataset_drift_share": settings.dataset_drift_share,
                                            "drifted_features": list(result.drifted_features),
                                            "reference": reference.kind, "policy_sha256": policy.sha256})
    return DriftStep(
        result=result, settings=settings, reference=reference, current_in_reference=current_in_reference,
        prediction_note=prediction_note, statistics_seconds=statistics_seconds,
        prediction_seconds=prediction_seconds, html=html, drift_run_id=drift_run_id, policy_sha256=policy.sha256,
        escalation=escalation(policy, settings.severity) if result.dataset_drift else None,
        dataset=dataset, prediction=_prediction_evidence(result, prediction_note), incident=incident,
        newest_model_trained_on_extract=_trained_on(con, model_name, extract_id),
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

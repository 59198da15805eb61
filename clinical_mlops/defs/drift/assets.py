"""Drift: each new extract against the champion's training population, one partition per extract."""


import time
from pathlib import Path

import dagster as dg

from clinical_mlops.drift import statistics as drift, report as drift_report
from clinical_mlops.registry import aliases as registry
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.defs.partitions import extract_partitions
from clinical_mlops.defs.resources import WAREHOUSE_POOL, ReportsResource, TrackingResource, WarehouseResource
from clinical_mlops.governance.policy import Policy, load_policy


class DriftConfig(dg.Config):
    policy_path: str = ""
    """Governance policy file; empty = governance/policy.yaml (or CLINICAL_MLOPS_POLICY)."""
    prediction_drift: bool = True
    """Score the extract with the reference model and compare score distributions and alert rates."""
    html_report: bool = True
    """Render the Evidently HTML report (on a seeded sample); the statistics never depend on it."""


def _policy(path: str) -> Policy:
    return load_policy(Path(path)) if path else load_policy()


def _markdown(result: drift.DriftResult, limit: int = 15) -> str:
    rows = ["| feature | test | statistic | adj. p | PSI | drifted | material | shift |", "|---|---|---|---|---|---|---|---|"]
    for f in result.ranked()[:limit]:
        p = "—" if f.p_value_adjusted != f.p_value_adjusted else f"{f.p_value_adjusted:.2g}"
        rows.append(f"| {f.name} | {f.test} | {f.statistic:.4f} | {p} | {f.psi:.3f} | "
                    f"{'yes' if f.drifted else 'no'} | {'yes' if f.material else 'no'} | {f.summary} |")
    return "\n".join(rows)


def build_drift_report(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "drift_report"])
    model_name = f"{spec.name}_candidate"
    monitored_categorical = list(dict.fromkeys([*spec.categorical_features, *spec.sensitive_attributes]))
    monitored_numeric = list(spec.numeric_features)

    @dg.asset(
        key=key,
        partitions_def=extract_partitions,
        deps=["validated_encounters", dg.AssetKey([spec.name, "encounter_features"])],
        group_name="drift",
        kinds={"duckdb", "evidently"},
        code_version="1",
        pool=WAREHOUSE_POOL,
        description=(
            f"{spec.title}: one extract's features, sensitive attributes, scores and labels against the "
            "champion's training population — KS / chi-square with multiple-comparison correction and PSI on the "
            "full data (monitoring.drift_metrics), Evidently HTML on a seeded sample."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "no_dataset_drift", asset=key, blocking=True,
                description="The share of drifting features stays under the policy's dataset_drift_share. "
                "Severity from the policy: WARN, or ERROR (blocks downstream) when drift.severity blocks promotion.",
            ),
            dg.AssetCheckSpec(
                "prediction_distribution_stable", asset=key,
                description="The reference model's score distribution on the extract matches its held-out scores.",
            ),
        ],
    )
    def drift_report_asset(
        context: dg.AssetExecutionContext,
        config: DriftConfig,
        warehouse: WarehouseResource,
        tracking: TrackingResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        extract_id = context.partition_key
        policy = _policy(config.policy_path)
        settings = drift.DriftSettings.from_policy(policy.drift)
        tracking.configure()
        columns = [*monitored_numeric, *monitored_categorical, "label"]
        with warehouse.connect() as con:
            reference, reference_sql, reference_params = drift.select_reference(
                con, spec.name, spec.features_table, extract_id, model_name)
            current_sql, current_params = drift.current_population(spec.features_table, extract_id)
            started = time.perf_counter()
            n_ref, n_cur = drift.stage_populations(
                con, reference_sql, current_sql, columns, reference_params=reference_params,
                current_params=current_params, unit="patient_key", order_key="encounter_id",
            )
            if n_cur == 0:
                raise dg.Failure(f"{extract_id} has no rows in {spec.features_table}: materialize "
                                 f"{spec.name}/encounter_features after validating the extract.")
            if n_ref == 0:
                raise dg.Failure(f"no reference population for {extract_id} ({reference.kind}); train a model first.")
            result = drift.compare(con, numeric=monitored_numeric, categorical=monitored_categorical,
                                   settings=settings, label="label")
            statistics_seconds = time.perf_counter() - started
            prediction_note = "not assessed"
            if config.prediction_drift and reference.model_version is not None:
                try:
                    model = registry.load_scoring_model(model_name, reference.model_version)
                    current_scores = drift.scores_in_chunks(con, current_sql, current_params, model.predict_risk)
                    reference_scores = con.execute(
                        "SELECT score FROM ml.predictions WHERE model_name = ? AND model_version = ? AND split = 'test'",
                        [model_name, reference.model_version],
                    ).fetchnumpy()["score"]
                    threshold = drift.model_record(con, model_name, reference.model_version)["operating_threshold"]
                    prediction, rates = drift.score_drift(reference_scores, current_scores,
                                                          threshold=float(threshold), settings=settings)
                    result = drift.with_prediction(result, prediction, rates)
                    prediction_note = prediction.summary
                except Exception as exc:  # the data-drift verdict stands without the scores
                    prediction_note = f"not assessed: {type(exc).__name__}"
                    context.log.warning(f"prediction drift not assessed for {extract_id}: {type(exc).__name__}")
            html_metadata: dict = {"evidently_report": "not rendered (html_report: false)"}
            report_file = None
            if config.html_report:
                sample = drift_report.sampled_frames(
                    con, drift.STAGE_TABLE, columns, sample_rows=settings.sample_rows, seed=settings.sample_seed)
                path = reports.path(spec.name, "drift", f"{extract_id}.html")
                html = drift_report.render_html(
                    sample.reference, sample.current, numeric=monitored_numeric,
                    categorical=[*monitored_categorical, "label"], path=path,
                    drift_share=settings.dataset_drift_share,
                )
                report_file = drift.ReportFile(str(path), html.sha256, settings.sample_rows, settings.sample_seed)
                html_metadata = {
                    "evidently_report": dg.MetadataValue.path(str(path)),
                    "evidently_report_sha256": html.sha256,
                    "evidently_sample": f"{len(sample.reference)}/{sample.reference_total} reference, "
                                        f"{len(sample.current)}/{sample.current_total} current rows (seed {sample.seed})",
                    "evidently_seconds": round(html.seconds, 3),
                    "evidently_drifted_columns": html.drifted_columns if html.drifted_columns is not None else -1,
                }
            current_in_reference = extract_id in reference.extracts
            run_id = drift.store(
                con, result, cohort=spec.name, extract_id=extract_id, reference=reference,
                policy_sha256=policy.sha256, report=report_file,
                details={"dagster_run_id": context.run_id, "current_in_reference": current_in_reference,
                         "statistics_seconds": round(statistics_seconds, 3),
                         **{k: v for k, v in html_metadata.items() if k in ("evidently_seconds", "evidently_drifted_columns")}},
            )
            con.execute(f"DROP TABLE IF EXISTS {drift.STAGE_TABLE}")
        severity = dg.AssetCheckSeverity.ERROR if settings.severity in ("block_promotion", "open_incident") \
            else dg.AssetCheckSeverity.WARN
        drifted = ", ".join(result.drifted_features) or "none"
        rule = policy.escalation.for_severity(settings.severity)
        escalation = {"escalation": dg.MetadataValue.json({
            "severity": rule.severity, "notify": [policy.owners.contact(r) for r in rule.notify],
            "within_hours": rule.within_hours, "action": rule.action})} if result.dataset_drift else {}
        return dg.MaterializeResult(
            metadata={
                "extract_id": extract_id,
                "reference": f"{reference.kind} {reference.model_name or ''} v{reference.model_version or '—'}",
                "reference_extracts": dg.MetadataValue.json(list(reference.extracts)),
                "current_in_reference": current_in_reference,
                "reference_rows": result.n_reference,
                "current_rows": result.n_current,
                "features_tested": result.features_tested,
                "features_drifted": len(result.drifted_features),
                "features_material": len(result.material_features),
                "drift_share": round(result.drift_share, 4),
                "dataset_drift": result.dataset_drift,
                "drifted_features": drifted,
                "prediction_drift": prediction_note,
                "target_drift": result.target.summary if result.target else "no labels",
                "statistics": dg.MetadataValue.md(_markdown(result)),
                "statistics_seconds": round(statistics_seconds, 3),
                **html_metadata,
                "correction": settings.correction,
                "alpha": settings.alpha,
                "policy_sha256": policy.sha256,
                "drift_run_id": run_id,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_dataset_drift",
                    passed=not result.dataset_drift,
                    severity=severity,
                    description=(f"{len(result.drifted_features)}/{result.features_tested} features drifted "
                                 f"({result.drift_share:.0%}; dataset drift at {settings.dataset_drift_share:.0%}): "
                                 f"{drifted}"),
                    metadata={"drift_share": round(result.drift_share, 4),
                              "dataset_drift_share": settings.dataset_drift_share,
                              "policy_severity": settings.severity, **escalation},
                ),
                dg.AssetCheckResult(
                    check_name="prediction_distribution_stable",
                    passed=not result.prediction_drift,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=prediction_note,
                    metadata={"assessed": result.prediction is not None},
                ),
            ],
        )

    return drift_report_asset


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_drift_report(spec) for spec in load_all_cohorts()])

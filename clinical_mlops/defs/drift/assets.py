"""Drift: each new extract against the champion's training population, one partition per extract."""


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
from clinical_mlops.drift.settings import DRIFT_CHECK
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts

if TYPE_CHECKING:
    from clinical_mlops.drift import steps

__all__ = ["DriftConfig", "build_drift_report", "defs"]


class DriftConfig(dg.Config):
    policy_path: str = ""
    """Governance policy file; empty = the policy resource's (governance/policy.yaml or CLINICAL_MLOPS_POLICY)."""
    prediction_drift: bool = True
    """Score the extract with the reference model and compare score distributions and alert rates."""
    html_report: bool = True
    """Render the Evidently HTML report (on a seeded sample); the statistics never depend on it."""


def _html_metadata(step: "steps.DriftStep") -> dict:
    if step.html is None:
        return {"evidently_report": "not rendered (html_report: false)"}
    html = step.html
    return {
        "evidently_report": dg.MetadataValue.path(str(html.path)),
        "evidently_report_sha256": html.sha256,
        "evidently_sample": html.sample,
        "evidently_seconds": round(html.seconds, 3),
        "evidently_drifted_columns": html.drifted_columns if html.drifted_columns is not None else -1,
    }


def _checks(extract_id: str, step: "steps.DriftStep") -> list[dg.AssetCheckResult]:
    """Both drift checks through the evidence rule: never a pass without a comparison behind it."""
    settings, result = step.settings, step.result
    incident = {} if step.incident is None else {
        "incident": dg.MetadataValue.json({**step.incident.as_metadata(), "created": step.incident.created}),
        "incident_id": step.incident.incident_id}
    escalation = {} if step.escalation is None else {"escalation": dg.MetadataValue.json(step.escalation)}
    return [
        evidence_check(
            DRIFT_CHECK, step.dataset, blocking=step.blocking,
            metadata={"extract_id": extract_id,
                      "drift_share": round(result.drift_share, 4) if result else -1.0,
                      "dataset_drift_share": settings.dataset_drift_share,
                      "policy_severity": settings.severity, "reference": step.reference.kind,
                      "newest_model_trained_on_extract": step.newest_model_trained_on_extract,
                      **escalation, **incident},
        ),
        evidence_check(
            "prediction_distribution_stable", step.prediction, blocking=False,
            metadata={"extract_id": extract_id, "assessed": bool(result and result.prediction is not None)},
        ),
    ]


def _result(extract_id: str, step: "steps.DriftStep") -> dg.MaterializeResult:
    result, settings, reference = step.result, step.settings, step.reference
    common = {
        "extract_id": extract_id,
        "reference": f"{reference.kind} {reference.model_name or ''} v{reference.model_version or '—'}",
        "reference_extracts": dg.MetadataValue.json(list(reference.extracts)),
        "current_in_reference": step.current_in_reference,
        "prediction_drift": step.prediction_note,
        "correction": settings.correction,
        "alpha": settings.alpha,
        "policy_sha256": step.policy_sha256,
        "evidence": step.dataset.status,
        "evidence_reason": step.dataset.reason,
    }
    if step.incident is not None:
        common["incident_id"] = step.incident.incident_id
    if result is None:
        return dg.MaterializeResult(metadata={**common, "dataset_drift": "not assessed"},
                                    check_results=_checks(extract_id, step))
    drifted = ", ".join(result.drifted_features) or "none"
    return dg.MaterializeResult(
        metadata={
            **common,
            "reference_rows": result.n_reference,
            "current_rows": result.n_current,
            "features_tested": result.features_tested,
            "features_drifted": len(result.drifted_features),
            "features_material": len(result.material_features),
            "drift_share": round(result.drift_share, 4),
            "dataset_drift": result.dataset_drift,
            "drifted_features": drifted,
            "target_drift": result.target.summary if result.target else "no labels",
            "statistics": dg.MetadataValue.md(step.statistics_markdown),
            "statistics_seconds": round(step.statistics_seconds, 3),
            **_html_metadata(step),
            "drift_run_id": step.drift_run_id or "",
        },
        check_results=_checks(extract_id, step),
    )


def build_drift_report(spec: CohortSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "drift_report"])

    @dg.asset(
        key=key,
        partitions_def=extract_partitions(spec.source),
        deps=[validated_key(spec.source), dg.AssetKey([spec.name, "encounter_features"])],
        group_name="drift",
        kinds={"duckdb", "evidently"},
        code_version=cohort_code_version(spec, "1"),
        pool=WAREHOUSE_POOL,
        description=(
            f"{spec.title}: one extract's features, sensitive attributes, scores and labels against the "
            "champion's training population — KS / chi-square with multiple-comparison correction and PSI on the "
            "full data (monitoring.drift_metrics), Evidently HTML on a seeded sample."
        ),
        check_specs=[
            extract_check_spec(
                DRIFT_CHECK, asset=key, source=spec.source, blocking=True,
                description="Per extract: the share of drifting features stays under the policy's dataset_drift_share "
                "(insufficient evidence without a reference population). Severity from the policy: WARN, or ERROR "
                "(blocks downstream) when drift.severity blocks promotion. Dataset drift opens an incident.",
            ),
            extract_check_spec(
                "prediction_distribution_stable", asset=key, source=spec.source,
                description="Per extract: the reference model's score distribution on the extract matches its held-out "
                "scores (insufficient evidence when there is no model or no held-out score to compare with).",
            ),
        ],
    )
    def drift_report_asset(
        context: dg.AssetExecutionContext,
        config: DriftConfig,
        warehouse: WarehouseResource,
        tracking: TrackingResource,
        reports: ReportsResource,
        policy: PolicyResource,
    ) -> dg.MaterializeResult:
        from clinical_mlops.drift import steps

        extract_id = context.partition_key
        declared = policy.load(config.policy_path)
        html_path = reports.path(spec.name, "drift", f"{extract_id}.html") if config.html_report else None
        with step_failures(), warehouse.connect() as con:
            step = steps.assess_drift(
                con, spec, extract_id, policy=declared, tracking_uri=tracking.tracking_uri,
                artifact_root=tracking.artifact_root, prediction_drift=config.prediction_drift, html_path=html_path,
                run_id=context.run.run_id, log=context.log,
            )
        return _result(extract_id, step)

    return drift_report_asset


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_drift_report(spec) for spec in load_all_cohorts()])

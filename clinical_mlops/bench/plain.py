"""The readmission pipeline as one plain script over the domain library, without Dagster.

The same work as the orchestrated variant (:mod:`.orchestrated`), step for step and with the
same settings: land and validate each extract, build the cohort's features and check their
schema, split by patient, fit, track and register the baseline and the candidate, evaluate
both with bootstrap CIs, audit fairness against the policy, test the newest extract for drift,
and write every step to the audit ledger. Comparing the two prices orchestration alone.

Run as ``python -m clinical_mlops.bench.plain --result out.json extract.csv [...]`` with
``CLINICAL_MLOPS_DATA_DIR`` pointing at an empty workspace.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

COHORT = "readmission_30d"
EVALUATION = {"n_boot": 200, "seed": 11, "min_group_size": 100}  # defs/evaluation EvaluationConfig


def run(extracts: list[Path], cohort: str = COHORT) -> dict:
    """Run every step; return the rows landed and the headline figures."""
    import pandera.pandas as pa

    from clinical_mlops.audit import events as audit_events, ledger
    from clinical_mlops.ingestion import deid, landing
    from clinical_mlops.fairness import audit as fairness, report as fairness_report
    from clinical_mlops.features import build as features
    from clinical_mlops.evaluation import models as model_evaluation
    from clinical_mlops.training import modelling, fit as training
    from clinical_mlops.registry import aliases as registry
    from clinical_mlops.bench import scale_ml_stages
    from clinical_mlops.validation import rules as validation
    from clinical_mlops.core import warehouse
    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops.governance.policy import load_policy
    from clinical_mlops.core.settings import default_paths

    paths = default_paths()
    paths.reports_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = ledger.default_ledger_path(paths.warehouse)
    run_id = f"plain-{uuid.uuid4()}"
    events: list = []
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def record(asset_key: str, metadata: dict, partition: str | None = None) -> None:
        now = time.perf_counter()
        step = asset_key.split("/")[-1]
        timings[step] = round(timings.get(step, 0.0) + now - clock[0], 3)
        clock[0] = now
        events.append(audit_events.materialization_event(
            storage_id=len(events) + 1, run_id=run_id, job_name="plain_script", asset_key=asset_key,
            partition=partition, metadata=metadata, tags={}, timestamp=time.time(),
        ))

    key, _ = deid.pseudonym_key_from_env()
    spec = load_cohort(cohort)
    policy = load_policy()
    con = warehouse.connect(paths.warehouse)
    try:
        landed = 0
        for path in extracts:
            result = landing.land_extract(con, path)
            landed += result.rows_landed
            record("raw_encounters", {"rows_landed": result.rows_landed, "sha256": result.sha256}, result.extract_id)
            outcome = validation.validate_extract(con, result.extract_id, pseudonym_key=key)
            record("validated_encounters", {"rows_valid": outcome.rows_valid,
                                            "rows_quarantined": outcome.rows_quarantined}, result.extract_id)

        build = features.build_features(con, spec)
        try:
            features.feature_schema(spec).validate(features.load_features(con, spec), lazy=True)
        except pa.errors.SchemaErrors as errors:
            raise SystemExit(f"feature schema failed: {len(errors.failure_cases)} failure cases")
        record(f"{cohort}/encounter_features", {"rows_out": build.rows_out})
        split = features.assign_split(con, spec)
        record(f"{cohort}/training_split", {"train_rows": split.train_rows, "test_rows": split.test_rows})

        tracking_args = {"tracking_uri": paths.mlflow_tracking_uri, "artifact_root": paths.mlflow_artifact_root}
        lr = modelling.LogisticRegressionParams()
        gb = modelling.GradientBoostingParams()
        models = {"baseline": (modelling.build_logistic_regression(spec, lr), lr.as_dict()),
                  "candidate": (modelling.build_gradient_boosting(spec, gb), gb.as_dict())}
        for role, (pipeline, params) in models.items():
            model = training.train_and_register(con, spec, role=role, pipeline=pipeline, params=params,
                                                **tracking_args)
            record(f"{cohort}/{role}_model", {"test_auroc": model.test_auroc})

        headline = {}
        for role in models:
            version = training.latest_model_version(con, spec.name, role)
            evaluated = model_evaluation.evaluate_model(
                con, spec, model_name=version["model_name"], model_version=version["model_version"],
                threshold=version["operating_threshold"], **EVALUATION)
            for name, png in evaluated.plots.items():
                (paths.reports_dir / f"{version['model_name']}_v{version['model_version']}_{name}.png").write_bytes(png)
            auroc = evaluated.overall("auroc")
            headline[f"{role}_auroc"] = round(auroc.estimate, 4)
        record(f"{cohort}/model_evaluation", headline)

        candidate = training.latest_model_version(con, spec.name, "candidate")
        audit, _ = fairness.audit_model(con, cohort=spec.name, features_table=spec.features_table,
                                        model=candidate, policy=policy)
        label = f"{candidate['model_name']} v{candidate['model_version']}"
        (paths.reports_dir / "fairness_report.html").write_text(
            fairness_report.render_audit_html(audit, title=f"Fairness report — {spec.title}", model=label, policy=policy))
        record(f"{cohort}/fairness_report", {"blocking_failed": audit.blocking_failed})

        newest = landing.extract_id_for(extracts[-1])
        model_name = training.registered_name(spec, "candidate")
        reference_model = registry.load_scoring_model(model_name, str(candidate["model_version"]))
        drifted = scale_ml_stages.drift_statistics(con, spec, newest, policy=policy,
                                                   predict=reference_model.predict_risk,
                                                   html_path=paths.reports_dir / f"drift_{newest}.html")
        record(f"{cohort}/drift_report", {k: drifted[k] for k in ("features_drifted", "dataset_drift")}, newest)

        ledger.append_many(ledger_path, [audit_events.safe_event(e) for e in events])
        audit_events.record_governance(con, ledger_path)
        timings["audit_ledger"] = round(time.perf_counter() - clock[0], 3)
    finally:
        con.close()
    return {"rows": landed, "steps": len(events), **headline, "fairness_blocking_failed": audit.blocking_failed,
            "features_drifted": drifted["features_drifted"], "seconds_by_step": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extracts", nargs="+", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    from clinical_mlops.core.settings import switch_off_telemetry

    switch_off_telemetry()
    args.result.write_text(json.dumps(run(args.extracts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

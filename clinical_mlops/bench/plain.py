"""The readmission pipeline as one plain script over the domain library, without Dagster.

The same work as the orchestrated variant (:mod:`.orchestrated`), step for step, through the
same step functions the assets call (``clinical_mlops.<domain>.steps``) with their default
settings: land and validate each extract, build the cohort's features and check their schema,
split by patient, fit, track and register the baseline and the candidate, evaluate both with
bootstrap CIs, audit fairness against the policy, test the newest extract for drift, and write
every step to the audit ledger. Each step opens its own warehouse connection, as each asset
does. Comparing the two prices orchestration alone.

The extracts land in one source (``--source``: ``synthetic_diabetes130`` by default,
``diabetes130`` for the real release) and feed that source's readmission cohort
(``<source>_readmission_30d``). Run as
``python -m clinical_mlops.bench.plain --result out.json [--source NAME] extract.csv [...]`` with
``CLINICAL_MLOPS_DATA_DIR`` pointing at an empty workspace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import uuid
from pathlib import Path

__all__ = ["COHORT", "SOURCE", "cohort_for", "main", "run"]

SOURCE = "synthetic_diabetes130"
COHORT = "readmission_30d"
"""The cohort; on a source it is the spec ``<source>_readmission_30d``."""


def cohort_for(source: str) -> str:
    """The readmission cohort's spec on ``source``."""
    return f"{source}_{COHORT}"


def run(extracts: list[Path], source: str = SOURCE) -> dict:
    """Run every step; return the rows landed and the headline figures."""
    from clinical_mlops.audit import events as audit_events, ledger
    from clinical_mlops.core import warehouse
    from clinical_mlops.core.settings import default_paths
    from clinical_mlops.drift import steps as drift_steps
    from clinical_mlops.evaluation import steps as evaluation_steps
    from clinical_mlops.fairness import steps as fairness_steps
    from clinical_mlops.features import steps as feature_steps
    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops.governance.policy import load_policy
    from clinical_mlops.ingestion import deid, steps as ingestion_steps
    from clinical_mlops.sources.contract import load_source
    from clinical_mlops.training import steps as training_steps
    from clinical_mlops.validation import steps as validation_steps

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
    contract = load_source(source)
    cohort = cohort_for(source)
    spec = load_cohort(cohort)
    policy = load_policy()
    tracking = {"tracking_uri": paths.mlflow_tracking_uri, "artifact_root": paths.mlflow_artifact_root}

    def connect():
        return contextlib.closing(warehouse.connect(paths.warehouse))

    landed = 0
    for path in extracts:
        with connect() as con:
            result = ingestion_steps.land(con, path, contract)
        landed += result.rows_landed
        record(f"{source}/raw_extract", {"rows_landed": result.rows_landed, "sha256": result.sha256},
               result.extract_id)
        with connect() as con:
            validated = validation_steps.validate(con, contract, result.extract_id, pseudonym_key=key)
        record(f"{source}/validated_extract", {"rows_valid": validated.outcome.rows_valid,
                                               "rows_quarantined": validated.outcome.rows_quarantined},
               result.extract_id)

    with connect() as con:
        built = feature_steps.build_features(con, spec)
    if not built.schema_valid:
        raise SystemExit(f"feature schema failed: {sum(built.schema_check.failures.values())} failure cases")
    record(f"{cohort}/encounter_features", {"rows_out": built.build.rows_out})
    with connect() as con:
        split = training_steps.split(con, spec).summary
    record(f"{cohort}/training_split", {"train_rows": split.train_rows, "test_rows": split.test_rows})

    with connect() as con:
        baseline = training_steps.train_baseline(con, spec, **tracking)
    record(f"{cohort}/baseline_model", {"test_auroc": baseline.test_auroc})
    with connect() as con:
        candidate = training_steps.train_candidate(con, spec, **tracking)
    record(f"{cohort}/candidate_model", {"test_auroc": candidate.test_auroc})

    with connect() as con:
        evaluated = evaluation_steps.evaluate_models(con, spec, reports_dir=paths.reports_dir)
    headline = {f"{m.role}_auroc": round(m.evaluation.overall("auroc").estimate, 4) for m in evaluated.models}
    record(f"{cohort}/model_evaluation", headline)

    with connect() as con:
        audited = fairness_steps.audit_candidate(con, spec, policy=policy, n_bootstrap=None,
                                                 reports_dir=paths.reports_dir, run_id=run_id)
    record(f"{cohort}/fairness_report", {"blocking_failed": audited.audit.blocking_failed})

    newest = extracts[-1].name
    with connect() as con:
        drifted = drift_steps.assess_drift(con, spec, newest, policy=policy, **tracking,
                                           html_path=paths.reports_dir / cohort / "drift" / f"{newest}.html",
                                           run_id=run_id)
    features_drifted = len(drifted.result.drifted_features)
    record(f"{cohort}/drift_report", {"features_drifted": features_drifted,
                                      "dataset_drift": drifted.result.dataset_drift}, newest)

    with connect() as con:
        ledger.append_many(ledger_path, [audit_events.safe_event(e) for e in events])
        audit_events.record_governance(con, ledger_path)
    timings["audit_ledger"] = round(time.perf_counter() - clock[0], 3)
    return {"rows": landed, "steps": len(events), **headline,
            "fairness_blocking_failed": audited.audit.blocking_failed, "features_drifted": features_drifted,
            "seconds_by_step": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extracts", nargs="+", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--source", default=SOURCE, help=f"the source the extracts land in (default {SOURCE})")
    args = parser.parse_args(argv)
    from clinical_mlops.core.settings import switch_off_telemetry

    switch_off_telemetry()
    args.result.write_text(json.dumps(run(args.extracts, args.source)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The readmission graph land → evaluation as Dagster runs: issue 16's first target.

One ``ingestion_job_<source>`` run per extract (``--source``: ``synthetic_diabetes130`` by
default, ``diabetes130`` for the real release), then one run of the source's readmission cohort's
features, split, baseline, candidate and evaluation (everything upstream of ``model_evaluation``);
with ``--through drift`` also its fairness report and a drift run for the newest extract (the work of
:mod:`.plain`). Every run is written to the audit ledger as ``clinical-mlops demo`` does. Runs go to the instance in ``DAGSTER_HOME``
(a SQLite-backed instance, as on a fresh clone). Run as
``python -m clinical_mlops.bench.orchestrated --result out.json [--source NAME] extract.csv [...]``,
the extracts in the workspace's ``landing/<source>/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clinical_mlops.bench.plain import COHORT, SOURCE, cohort_for

__all__ = ["COHORT", "MODEL_STEPS", "SOURCE", "THROUGH", "main", "run"]
MODEL_STEPS = ("encounter_features", "training_split", "baseline_model", "candidate_model", "model_evaluation")
THROUGH = ("evaluation", "drift")


def run(extracts: list[Path], source: str = SOURCE, through: str = "evaluation") -> dict:
    import dagster as dg

    from clinical_mlops.cli import runs
    from clinical_mlops.defs.audit.sensors import record_run

    cohort = cohort_for(source)
    instance = runs.project_instance()
    project = runs.load_definitions()
    selected = MODEL_STEPS + (("fairness_report",) if through == "drift" else ())
    model_job = dg.define_asset_job("bench_model_job", selection=dg.AssetSelection.assets(
        *[dg.AssetKey([cohort, step]) for step in selected]))
    drift_job = dg.define_asset_job("bench_drift_job", selection=dg.AssetSelection.assets(
        dg.AssetKey([cohort, "drift_report"])))
    defs = dg.Definitions.merge(project, dg.Definitions(jobs=[model_job, drift_job]))

    outcomes = []
    for path in extracts:
        outcomes.append(runs.run_ingestion(defs, instance, source, path.name))
    outcomes.append(runs.run_job(defs, instance, "bench_model_job"))
    model_outcome = outcomes[-1]
    if through == "drift":
        outcomes.append(runs.run_job(defs, instance, "bench_drift_job", partition_key=extracts[-1].name))
    for outcome in outcomes:
        record_run(instance, outcome.run_id)
    # A blocking check that fails (a fairness gate on the real extract, say) stops its run by
    # design; that is an outcome of the pipeline, not a failure of the benchmark.
    failed = [o.error for o in outcomes if not o.success and not o.blocking_failures]
    if failed:
        raise SystemExit(f"orchestrated pipeline failed: {failed[0]}")
    rows = sum(int(o.metadata.get(f"{source}/raw_extract", {}).get("rows_landed", 0)) for o in outcomes)
    evaluation = model_outcome.metadata.get(f"{cohort}/model_evaluation", {})
    steps = sum(len(o.metadata) for o in outcomes)  # asset steps that reported
    return {"rows": rows, "steps": steps, "runs": len(outcomes), "through": through,
            "blocking_checks_failed": sorted({c for o in outcomes for c in o.blocking_failures}),
            "baseline_auroc": evaluation.get("baseline_auroc"), "candidate_auroc": evaluation.get("candidate_auroc")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extracts", nargs="+", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--source", default=SOURCE, help=f"the source the extracts land in (default {SOURCE})")
    parser.add_argument("--through", choices=THROUGH, default="evaluation",
                        help="stop at model_evaluation (default) or also run fairness and drift")
    args = parser.parse_args(argv)
    args.result.write_text(json.dumps(run(args.extracts, args.source, args.through)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Measure Dagster's per-step cost for the in-process and multiprocess executors.

Two graphs, each run with both executors side by side in one process tree:
- a chain of 8 no-op assets (pure orchestration overhead per step);
- the readmission training graph (features → split → baseline + candidate → evaluation)
  on 3,000 synthetic encounters.

Usage: uv run python -m benchmarks.executor_overhead [--repeats 3]
Writes a Markdown table to stdout and JSON to .bench/executor_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg

from clinical_mlops.bench.overhead import noop_chain
from clinical_mlops.core.settings import PROJECT_ROOT, switch_off_telemetry

switch_off_telemetry()
# Child processes of the multiprocess executor re-import this module: share the folder by env.
WORKDIR = Path(os.environ.setdefault("EXECUTOR_BENCH_DIR", tempfile.mkdtemp(prefix="executor_bench_")))
N_NOOP = 8
TRAINING_GRAPH = [
    ["readmission_30d", name]
    for name in ("encounter_features", "training_split", "baseline_model", "candidate_model", "model_evaluation")
]


def _noop_assets() -> list[dg.AssetsDefinition]:
    return noop_chain(N_NOOP, "noop")


def _workspace_resources() -> dict:
    from clinical_mlops.defs import resources as r

    return {
        "warehouse": r.WarehouseResource(path=str(WORKDIR / "warehouse.duckdb")),
        "landing_zone": r.LandingZoneResource(directory=str(WORKDIR / "landing")),
        "tracking": r.TrackingResource(
            tracking_uri=f"sqlite:///{WORKDIR / 'mlflow.db'}", artifact_root=str(WORKDIR / "artifacts")
        ),
        "pseudonymisation": r.PseudonymisationResource(),
        "reports": r.ReportsResource(directory=str(WORKDIR / "reports")),
    }


def _project_assets(project: dg.Definitions) -> list[dg.AssetsDefinition]:
    """Ingestion, validation and the readmission training graph (nothing else is measured)."""
    wanted = {dg.AssetKey(k) for k in TRAINING_GRAPH} | {dg.AssetKey("raw_encounters"), dg.AssetKey("validated_encounters")}
    return [a for a in project.assets if set(a.keys) & wanted]


def _defs(executor: dg.ExecutorDefinition) -> dg.Definitions:
    from clinical_mlops.definitions import defs

    project = defs()
    return dg.Definitions(
        assets=[*_project_assets(project), *_noop_assets()],
        resources={**(project.resources or {}), **_workspace_resources()},
        jobs=[
            dg.define_asset_job("noop_job", selection=dg.AssetSelection.assets(*[f"noop_{i}" for i in range(N_NOOP)])),
            dg.define_asset_job("train_job", selection=dg.AssetSelection.assets(*TRAINING_GRAPH)),
        ],
        executor=executor,
    )


def in_process_noop():
    return _defs(dg.in_process_executor).resolve_job_def("noop_job")


def multiprocess_noop():
    return _defs(dg.multiprocess_executor).resolve_job_def("noop_job")


def in_process_train():
    return _defs(dg.in_process_executor).resolve_job_def("train_job")


def multiprocess_train():
    return _defs(dg.multiprocess_executor).resolve_job_def("train_job")


def _prepare(instance: dg.DagsterInstance) -> None:
    from clinical_mlops.ingestion import synthetic, uci

    encounters = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=3_000, seed=5))
    paths = uci.write_sequential_extracts(encounters, WORKDIR / "landing", 1, prefix="bench")
    instance.add_dynamic_partitions("extracts", [paths[0].name])
    job = _defs(dg.in_process_executor)
    dg.materialize(list(job.assets), selection=dg.AssetSelection.groups("ingestion", "validation"),
                   partition_key=paths[0].name, instance=instance, resources=_workspace_resources())


def _time(instance: dg.DagsterInstance, factory, run_config: dict | None = None) -> float:
    started = time.perf_counter()
    result = dg.execute_job(dg.reconstructable(factory), instance=instance, run_config=run_config or {})
    elapsed = time.perf_counter() - started
    assert result.success, f"{factory.__name__} failed"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train_config = {"ops": {"readmission_30d__candidate_model": {"config": {"max_iter": 100}}}}
    (WORKDIR / "dagster").mkdir(exist_ok=True)
    # As in the project's dagster.yaml: warehouse writers share one slot, so parallel
    # multiprocess steps queue instead of colliding on DuckDB's single-writer lock.
    pools = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}
    with dg.instance_for_test(temp_dir=str(WORKDIR / "dagster"), overrides=pools) as instance:
        _prepare(instance)
        rows = []
        for label, factories, config, steps in (
            ("8 no-op assets", (in_process_noop, multiprocess_noop), None, N_NOOP),
            ("training graph (5 steps, 3k rows)", (in_process_train, multiprocess_train), train_config, 5),
        ):
            timings: dict[str, list[float]] = {"in_process": [], "multiprocess": []}
            for _ in range(args.repeats):  # interleaved, so both see the same machine load
                timings["in_process"].append(_time(instance, factories[0], config))
                timings["multiprocess"].append(_time(instance, factories[1], config))
            inproc, multi = (statistics.median(timings[k]) for k in ("in_process", "multiprocess"))
            rows.append({"graph": label, "steps": steps, "in_process_s": round(inproc, 2),
                         "multiprocess_s": round(multi, 2), "extra_per_step_s": round((multi - inproc) / steps, 2)})
    print("| graph | steps | in-process (s) | multiprocess (s) | multiprocess extra per step (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['graph']} | {r['steps']} | {r['in_process_s']} | {r['multiprocess_s']} | {r['extra_per_step_s']} |")
    out = PROJECT_ROOT / ".bench" / "executor_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""A small trained graph for the audit tests: two extracts landed, one cohort trained and carded.

Built the way ``test_assets.py`` materializes assets, on its own temporary warehouse, landing
zone, MLflow store and ledger; the session-scoped ``graph`` fixture of ``conftest.py`` builds it
once per worker process for the audit test modules. Tests that change the warehouse do it inside
a transaction they roll back, so the shared graph stays as built.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from clinical_mlops.audit import ledger
from clinical_mlops.ingestion import uci
from clinical_mlops_tests.conftest import Workspace

COHORT = "synthetic_diabetes130_readmission_30d"


@dataclass
class TrainedGraph:
    workspace: Workspace
    instance: dg.DagsterInstance
    extract_ids: list[str]
    ingest_run_ids: list[str]
    train_run_id: str
    candidate: str
    candidate_version: str
    baseline: str
    baseline_version: str

    @property
    def ledger_path(self) -> Path:
        return ledger.default_ledger_path(self.workspace.warehouse)

    @property
    def reports(self) -> Path:
        return self.workspace.root / "reports"


def build(root: Path, mlflow_template: Path, encounters, *, candidate_iterations: int = 30) -> TrainedGraph:
    from clinical_mlops.definitions import defs as load_defs
    from clinical_mlops.defs.audit.sensors import record_run

    workspace = Workspace(root)
    workspace.landing.mkdir(parents=True)
    (root / "mlflow").mkdir()
    shutil.copyfile(mlflow_template, root / "mlflow" / "mlflow.db")
    defs = load_defs()
    # Only the path to the model card: other stages' assets (and their resources) stay out of these tests.
    needed = {dg.AssetKey(["synthetic_diabetes130", "raw_extract"]), dg.AssetKey(["synthetic_diabetes130", "validated_extract"])} | {
        dg.AssetKey([COHORT, name]) for name in
        ("encounter_features", "training_split", "baseline_model", "candidate_model", "model_evaluation", "model_card")
    }
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and set(a.keys) <= needed]
    instance = dg.DagsterInstance.ephemeral()
    paths = uci.write_sequential_extracts(encounters, workspace.landing, 2, prefix="month")
    extract_ids = [p.name for p in paths]
    instance.add_dynamic_partitions("synthetic_diabetes130_extracts", extract_ids)
    ingest_runs = []
    for extract_id in extract_ids:
        result = dg.materialize(
            assets, selection=dg.AssetSelection.groups("ingestion", "validation"), partition_key=extract_id,
            instance=instance, resources=workspace.resources(),
        )
        record_run(instance, result.run_id, warehouse_path=workspace.warehouse)
        ingest_runs.append(result.run_id)
    result = dg.materialize(
        assets,
        selection=dg.AssetSelection.key_prefixes([COHORT]),
        instance=instance,
        resources=workspace.resources(),
        run_config=dg.RunConfig(ops={
            f"{COHORT}__baseline_model": {"config": {"max_iter": 200}},
            f"{COHORT}__candidate_model": {"config": {"max_iter": candidate_iterations}},
            f"{COHORT}__model_evaluation": {"config": {"n_bootstrap": 30}},
        }),
    )
    record_run(instance, result.run_id, warehouse_path=workspace.warehouse)
    candidate = result.asset_materializations_for_node(f"{COHORT}__candidate_model")[0].metadata
    baseline = result.asset_materializations_for_node(f"{COHORT}__baseline_model")[0].metadata
    return TrainedGraph(
        workspace=workspace,
        instance=instance,
        extract_ids=extract_ids,
        ingest_run_ids=ingest_runs,
        train_run_id=result.run_id,
        candidate=candidate["registered_model"].value,
        candidate_version=str(candidate["model_version"].value),
        baseline=baseline["registered_model"].value,
        baseline_version=str(baseline["model_version"].value),
    )

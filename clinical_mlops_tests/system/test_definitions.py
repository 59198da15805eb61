"""The Dagster definitions load, every job resolves, and the asset graph is what we expect."""

from __future__ import annotations

import dagster as dg

from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.defs.resources import WAREHOUSE_POOL


def test_every_job_resolves(defs):
    for job in defs.jobs or []:
        assert defs.resolve_job_def(job.name).name == job.name


SOURCES = ("diabetes130", "sepsis_survival", "synthetic_diabetes130")
COHORTS = {  # name: (source, cohort file)
    "diabetes130_readmission_30d": ("diabetes130", "readmission_30d"),
    "diabetes130_prolonged_stay": ("diabetes130", "prolonged_stay"),
    "synthetic_diabetes130_readmission_30d": ("synthetic_diabetes130", "readmission_30d"),
    "synthetic_diabetes130_prolonged_stay": ("synthetic_diabetes130", "prolonged_stay"),
    "sepsis_mortality": ("sepsis_survival", "sepsis_mortality"),
}
COHORT_ASSETS = {  # each cohort's assets and their group; partitioned ones by the source's extracts
    "encounter_features": "features", "training_split": "training", "baseline_model": "training",
    "candidate_model": "training", "model_evaluation": "evaluation", "fairness_report": "fairness",
    "fairness_root_cause": "fairness", "mitigated_model": "fairness", "change_control_report": "registry",
    "promotion": "registry", "batch_predictions": "scoring", "drift_report": "drift",
    "external_evaluation": "drift", "prediction_log_ingest": "monitoring", "prediction_outcomes": "monitoring",
    "production_monitoring": "monitoring", "training_serving_skew": "monitoring", "production_windows": "monitoring",
    "model_card": "audit",
}
PARTITIONED_BY_EXTRACT = {"batch_predictions", "drift_report", "external_evaluation"}


def _partitions(node) -> str | None:
    return getattr(node.partitions_def, "name", None) if node.partitions_def is not None else None


def test_asset_graph_snapshot(defs):
    """The whole graph: per source its raw and validated extract, per cohort (one per source it is
    built on, named ``<source>_<cohort>``) its assets, and the audit ledger. A change to the graph
    changes this snapshot on purpose: update SOURCES / COHORTS / COHORT_ASSETS above after checking it."""
    graph = defs.resolve_asset_graph()
    nodes = {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}
    assert {(s.name, s.source, s.cohort) for s in load_all_cohorts()} == {(n, *v) for n, v in COHORTS.items()}
    expected = {"audit_ledger": ("audit", None)}
    for source in SOURCES:
        expected[f"{source}/raw_extract"] = ("ingestion", f"{source}_extracts")
        expected[f"{source}/validated_extract"] = ("validation", f"{source}_extracts")
    for name, (source, _) in COHORTS.items():
        for asset, group in COHORT_ASSETS.items():
            expected[f"{name}/{asset}"] = (group, f"{source}_extracts" if asset in PARTITIONED_BY_EXTRACT else None)
    assert {k: (node.group_name, _partitions(node)) for k, node in nodes.items()} == expected
    for source in SOURCES:
        assert nodes[f"{source}/validated_extract"].parent_keys == {dg.AssetKey([source, "raw_extract"])}
    for name, (source, _) in COHORTS.items():
        validated = dg.AssetKey([source, "validated_extract"])
        assert validated in nodes[f"{name}/encounter_features"].parent_keys, name
        assert dg.AssetKey([name, "training_split"]) in nodes[f"{name}/candidate_model"].parent_keys
        assert {validated, dg.AssetKey([name, "encounter_features"])} <= nodes[f"{name}/external_evaluation"].parent_keys
        # a cohort reads only its own source's extracts
        others = {dg.AssetKey([s, a]) for s in SOURCES if s != source for a in ("raw_extract", "validated_extract")}
        assert not any(others & node.parent_keys for k, node in nodes.items() if k.startswith(f"{name}/")), name


def test_every_asset_has_a_code_version_group_and_kinds(defs):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.code_version, f"{key.to_user_string()} has no code_version"
        assert node.group_name != "default", f"{key.to_user_string()} has no group"
        assert node.kinds, f"{key.to_user_string()} declares no kinds"


def test_warehouse_writers_share_one_pool(defs):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).assets_def.op.pool == WAREHOUSE_POOL, key.to_user_string()


def test_gates_are_blocking_checks(defs):
    graph = defs.resolve_asset_graph()
    blocking = {
        (key.asset_key.to_user_string(), key.name)
        for key in graph.asset_check_keys if graph.get_check_spec(key).blocking
    }
    for source in SOURCES:
        assert (f"{source}/raw_extract", "no_direct_identifiers") in blocking
        assert (f"{source}/validated_extract", "landed_rows_reconcile") in blocking
    for spec in load_all_cohorts():
        assert (f"{spec.name}/training_split", "no_patient_overlap") in blocking


def test_default_executor_is_in_process(defs):
    job = defs.resolve_job_def("training_job")
    assert job.executor_def.name == dg.in_process_executor.name

"""The Dagster definitions load, every job resolves, and the asset graph is what we expect."""

from __future__ import annotations

import dagster as dg

from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.defs.resources import WAREHOUSE_POOL



def test_every_job_resolves(defs):
    for job in defs.jobs or []:
        assert defs.resolve_job_def(job.name).name == job.name


def test_asset_graph_snapshot(defs):
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}
    expected = {"synthetic_diabetes130/raw_extract", "synthetic_diabetes130/validated_extract"}
    for spec in load_all_cohorts():
        for asset in ("encounter_features", "training_split", "baseline_model", "candidate_model", "model_evaluation"):
            expected.add(f"{spec.name}/{asset}")
    assert expected <= set(keys)
    assert {k for k, node in keys.items() if node.group_name == "ingestion"} == {"synthetic_diabetes130/raw_extract"}
    for name in load_all_cohorts():
        model = graph.get(dg.AssetKey([name.name, "candidate_model"]))
        assert dg.AssetKey([name.name, "training_split"]) in model.parent_keys


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
    assert ("synthetic_diabetes130/raw_extract", "no_direct_identifiers") in blocking
    assert ("synthetic_diabetes130/validated_extract", "landed_rows_reconcile") in blocking
    for spec in load_all_cohorts():
        assert (f"{spec.name}/training_split", "no_patient_overlap") in blocking


def test_default_executor_is_in_process(defs):
    job = defs.resolve_job_def("training_job")
    assert job.executor_def.name == dg.in_process_executor.name

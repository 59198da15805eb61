"""The Dagster internals the project relies on are where ``defs/dagster_internals.py`` expects them.

A Dagster upgrade that moves or changes one of them fails here, naming it, instead of failing a
sensor or the run launcher in production. Each test also checks that no public replacement has
appeared, so the adapter is retired as soon as it can be.
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.defs import dagster_internals as internals


def test_the_check_record_status_enum_has_the_statuses_the_sensors_compare_against():
    assert {s.name for s in internals.AssetCheckExecutionRecordStatus} >= {"PLANNED", "SUCCEEDED", "FAILED"}
    assert internals.AssetCheckExecutionRecordStatus.FAILED.value == "FAILED"


def test_a_failed_check_execution_is_found_by_status_through_the_adapter_enum():
    @dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
    def numbers() -> dg.MaterializeResult:
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="positive", passed=False)])

    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([numbers], instance=instance)
    key = dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")
    failed = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=10, status={internals.AssetCheckExecutionRecordStatus.FAILED})
    passed = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=10, status={internals.AssetCheckExecutionRecordStatus.SUCCEEDED})
    assert len(failed) == 1 and not passed
    assert failed[0].status == internals.AssetCheckExecutionRecordStatus.FAILED


def test_concurrency_slots_of_a_run_can_be_read_and_freed(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert isinstance(internals.open_concurrency_tables(instance), set)
        instance.event_log_storage.set_concurrency_slots("duckdb_warehouse", 1)
        claim = instance.event_log_storage.claim_concurrency_slot("duckdb_warehouse", "run-1", "step")
        assert claim.is_claimed
        internals.free_concurrency_slots(instance, "run-1")
        info = instance.event_log_storage.get_concurrency_info("duckdb_warehouse")
        assert info.active_slot_count == 0


def project_instance(tmp_path: Path, monkeypatch) -> dg.DagsterInstance:
    """The instance the project's own ``dagster.yaml`` describes, its storage under ``tmp_path``."""
    text = (PROJECT_ROOT / "dagster.yaml").read_text().replace("data/dagster", str(tmp_path / "dagster"))
    (tmp_path / "dagster.yaml").write_text(text)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return dg.DagsterInstance.get()


def test_the_project_instance_stores_events_with_the_atomic_pool_claim(tmp_path, monkeypatch):
    with project_instance(tmp_path, monkeypatch) as instance:
        assert isinstance(instance.event_log_storage, internals.AtomicClaimEventLogStorage)
        assert (tmp_path / "dagster" / "storage" / "history" / "runs").is_dir()


def test_a_slot_read_free_but_claimed_meanwhile_is_not_taken_twice(tmp_path, monkeypatch):
    """Two processes both read slot N as free; only the first UPDATE wins (SQLite ignores FOR UPDATE)."""
    with project_instance(tmp_path, monkeypatch) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("duckdb_warehouse", 1)
        with storage.index_connection() as conn:
            stale = internals.free_slot_id(conn, "duckdb_warehouse")
        assert stale is not None
        assert storage.claim_concurrency_slot("duckdb_warehouse", "run-a", "land").is_claimed
        with storage.index_connection() as conn:
            assert internals.free_slot_id(conn, "duckdb_warehouse") is None
            assert not internals.take_slot(conn, stale, "run-b", "land")
        info = storage.get_concurrency_info("duckdb_warehouse")
        assert [(s.run_id, s.step_key) for s in info.claimed_slots] == [("run-a", "land")]
        assert not storage.claim_concurrency_slot("duckdb_warehouse", "run-b", "land").is_claimed
        internals.free_concurrency_slots(instance, "run-a")
        assert storage.claim_concurrency_slot("duckdb_warehouse", "run-b", "land").is_claimed


def test_instance_config_validates_and_refuses(tmp_path):
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    config = internals.instance_config(tmp_path)
    assert config["concurrency"]["pools"]["default_limit"] == 1
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: not-a-boolean\n")
    with pytest.raises(dg.DagsterInvalidConfigError):
        internals.instance_config(tmp_path)


@pytest.mark.parametrize("config_file", [
    "dagster.yaml",
    "deploy/dagster.postgres.yaml",
])
def test_the_classes_our_instance_config_names_still_exist(config_file):
    """``dagster.yaml`` names Dagster classes by module path (Dagster's documented way): they must load."""
    config = yaml.safe_load((PROJECT_ROOT / config_file).read_text())
    pointers = [v for v in config.values() if isinstance(v, dict) and {"module", "class"} <= set(v)]
    assert pointers
    for pointer in pointers:
        module = importlib.import_module(pointer["module"])
        assert hasattr(module, pointer["class"]), f"{pointer['module']}.{pointer['class']} moved"


def test_no_public_replacement_exists_yet():
    """When one of these appears in ``dagster``, use it and shrink ``dagster_internals``."""
    assert not hasattr(dg, "AssetCheckExecutionRecordStatus")
    assert not hasattr(dg.DagsterInstance, "free_concurrency_slots_for_run")


def test_nothing_else_imports_dagster_internals():
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(from|import)\s+dagster\._", re.MULTILINE)
    offenders = [
        str(path.relative_to(root))
        for folder in ("clinical_mlops", "clinical_mlops_tests")
        for path in (root / folder).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8")) and path.name != "dagster_internals.py"
    ]
    assert offenders == []

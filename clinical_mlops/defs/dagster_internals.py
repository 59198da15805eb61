"""The one place this project reaches past Dagster's public API.

Dagster 1.13 has no public name for three things the project needs. Each is wrapped here, with
why and what replaces it, so an upgrade that moves one breaks this module (and
``clinical_mlops_tests/system/testdagster_internals.py``, which fails loudly) instead of a
sensor at three in the morning. Nothing else in ``clinical_mlops`` imports from ``dagster._``.

* :data:`AssetCheckExecutionRecordStatus` — the status of a stored check execution, needed to
  ask the event log for *failed* executions only. Records returned by public-facing calls carry
  it, but ``dagster`` does not export the enum. Replace with ``dg.AssetCheckExecutionRecordStatus``
  once Dagster exports it.
* :func:`free_concurrency_slots` / :func:`open_concurrency_tables` — a run killed with
  ``kill -9`` keeps its pool slot. ``DagsterInstance`` has no public method to free it; Dagster's
  own run-monitoring daemon calls the event-log storage method wrapped here. Replace with a
  ``DagsterInstance`` method if one appears.
* :func:`instance_config` — validate a ``dagster.yaml`` without connecting to its storage (the
  production one points at PostgreSQL). ``DagsterInstance.from_config`` would connect. Replace
  with a public validator if Dagster adds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

__all__ = [
    "AssetCheckExecutionRecordStatus",
    "free_concurrency_slots",
    "instance_config",
    "open_concurrency_tables",
]


def free_concurrency_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Release every pool slot held by ``run_id`` (what the run-monitoring daemon does)."""
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def open_concurrency_tables(instance: dg.DagsterInstance) -> set[str]:
    """Read the pool keys, which creates the concurrency tables of a new instance's storage."""
    return instance.event_log_storage.get_concurrency_keys()


def instance_config(directory: Path | str) -> Mapping[str, Any]:
    """The ``dagster.yaml`` in ``directory``, validated against Dagster's instance schema.

    Raises ``dg.DagsterInvalidConfigError`` when the file is not valid instance config.
    """
    config, _ = dagster_instance_config(str(directory))
    return config

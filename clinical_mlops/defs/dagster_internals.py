"""The one place this project reaches past Dagster's public API.

Dagster 1.13 has no public name for three things the project needs. Each is wrapped here, with
why and what replaces it, so an upgrade that moves one breaks this module (and
``clinical_mlops_tests/system/test_dagster_internals.py``, which fails loudly) instead of a
sensor at three in the morning. Nothing else in ``clinical_mlops`` imports from ``dagster._``.

* :data:`AssetCheckExecutionRecordStatus` — the status of a stored check execution, needed to
  ask the event log for *failed* executions only. Records returned by public-facing calls carry
  it, but ``dagster`` does not export the enum. Replace with ``dg.AssetCheckExecutionRecordStatus``
  once Dagster exports it.
* :func:`free_concurrency_slots` / :func:`open_concurrency_tables` — a run killed with
  ``kill -9`` keeps its pool slot. ``DagsterInstance`` has no public method to free it; Dagster's
  own run-monitoring daemon calls the event-log storage method wrapped here. Replace with a
  ``DagsterInstance`` method if one appears.
* :class:`LocalStorage` — Dagster's SQLite storage with its pool claim made atomic. Stock
  ``SqlEventLogStorage._claim_concurrency_slot`` selects a free slot, then updates it by id
  alone; on PostgreSQL the select locks the row (``FOR UPDATE SKIP LOCKED``), but SQLite ignores
  ``FOR UPDATE``, so two processes that read the same free slot both "claim" it and two
  warehouse writers run at once (seen as overlapping ``land`` steps). Here the update also
  requires the slot to be still free, so the loser is blocked and polls again. ``dagster.yaml``
  names it as ``storage: custom``. Retire it when Dagster's SQLite claim is conditional.
* :func:`instance_config` — validate a ``dagster.yaml`` without connecting to its storage (the
  production one points at PostgreSQL). ``DagsterInstance.from_config`` would connect. Replace
  with a public validator if Dagster adds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as db
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._utils.concurrency import ConcurrencySlotStatus

__all__ = [
    "AssetCheckExecutionRecordStatus",
    "AtomicClaimEventLogStorage",
    "LocalStorage",
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


class AtomicClaimEventLogStorage(SqliteEventLogStorage):
    """SQLite event log whose pool slot goes to exactly one step, however the claims interleave."""

    def _claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str) -> ConcurrencySlotStatus:
        with self.index_connection() as conn:
            slot_id = free_slot_id(conn, concurrency_key)
            if slot_id is None or not take_slot(conn, slot_id, run_id, step_key):
                return ConcurrencySlotStatus.BLOCKED
            return ConcurrencySlotStatus.CLAIMED


def free_slot_id(conn: Any, concurrency_key: str) -> int | None:
    """The id of one unclaimed slot of the pool, or ``None`` when every slot is held."""
    row = conn.execute(
        db.select(ConcurrencySlotsTable.c.id)
        .where(ConcurrencySlotsTable.c.concurrency_key == concurrency_key,
               ConcurrencySlotsTable.c.step_key.is_(None),
               ConcurrencySlotsTable.c.deleted == False)  # noqa: E712
        .limit(1)
    ).fetchone()
    return None if row is None else int(row[0])


def take_slot(conn: Any, slot_id: int, run_id: str, step_key: str) -> bool:
    """Claim slot ``slot_id`` for the step if it is still free: one conditional UPDATE, atomic in SQLite."""
    return bool(conn.execute(
        ConcurrencySlotsTable.update()
        .values(run_id=run_id, step_key=step_key)
        .where(ConcurrencySlotsTable.c.id == slot_id, ConcurrencySlotsTable.c.step_key.is_(None))
    ).rowcount)


class LocalStorage(DagsterSqliteStorage):
    """``storage: sqlite`` with :class:`AtomicClaimEventLogStorage` as its event log."""

    def __init__(self, base_dir: str, inst_data: Any = None):
        super().__init__(base_dir, inst_data)
        self._event_log_storage = AtomicClaimEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> LocalStorage:
        return cls.from_local(inst_data=inst_data, **config_value)

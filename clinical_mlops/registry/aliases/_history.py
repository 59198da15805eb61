"""The alias history table (``audit.alias_history``) and what it answers: an alias's version at any time,
the champion lineage and the cohort's champion."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from clinical_mlops.core.warehouse import table_exists

__all__ = [
    "CHALLENGER", "CHAMPION", "CHAMPION_ROLES", "COLUMNS", "DDL", "AliasChange", "RegistryError", "alias_at",
    "champion_at", "champion_lineage", "cohort_champion", "cohort_model_names", "current_alias", "ensure_tables",
    "history", "to_utc_naive",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
CHAMPION_ROLES: tuple[str, ...] = ("candidate", "mitigated")
"""Roles whose registered model may hold a cohort's champion alias (one of them at a time)."""

DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS audit",
    """CREATE TABLE IF NOT EXISTS audit.alias_history (
    event_id VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,                 -- order of events (ties in changed_at are possible)
    model VARCHAR NOT NULL,              -- registered model name
    alias VARCHAR NOT NULL,              -- champion | challenger | ...
    version VARCHAR,                     -- NULL when the alias was removed
    previous_version VARCHAR,            -- the alias's version before this change (NULL if none)
    action VARCHAR NOT NULL,             -- promote | rollback | set | clear
    actor VARCHAR NOT NULL,              -- who: a person (manual path) or dagster:<run_id>
    reason VARCHAR NOT NULL,             -- why
    meaning VARCHAR NOT NULL,            -- what the signature means (21 CFR 11.50)
    policy_sha256 VARCHAR NOT NULL,      -- governance policy in force
    changed_at TIMESTAMP NOT NULL        -- UTC
)""",
)


class RegistryError(RuntimeError):
    """An alias change that cannot be made (unknown version, nothing to roll back to, ...)."""


@dataclass(frozen=True)
class AliasChange:
    event_id: str
    seq: int
    model: str
    alias: str
    version: str | None
    previous_version: str | None
    action: str
    actor: str
    reason: str
    meaning: str
    policy_sha256: str
    changed_at: datetime

    def as_dict(self) -> dict:
        return {**self.__dict__, "changed_at": self.changed_at.isoformat() + "Z"}


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


def _recorded(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the history table exists (readers never create it, so they work read-only)."""
    return table_exists(con, "audit.alias_history")


def to_utc_naive(moment: datetime) -> datetime:
    """UTC without tzinfo (how the warehouse stores time); a naive input is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[AliasChange]:
    names = [d[0] for d in cursor.description]
    return [AliasChange(**dict(zip(names, row))) for row in cursor.fetchall()]


COLUMNS = "event_id, seq, model, alias, version, previous_version, action, actor, reason, meaning, policy_sha256, changed_at"


def history(con: duckdb.DuckDBPyConnection, model: str, alias: str | None = None) -> list[AliasChange]:
    """Every recorded change of a model's aliases (optionally one alias), oldest first."""
    if not _recorded(con):
        return []
    where, params = "model = ?", [model]
    if alias is not None:
        where, params = where + " AND alias = ?", [model, alias]
    return _rows(con.execute(f"SELECT {COLUMNS} FROM audit.alias_history WHERE {where} ORDER BY seq", params))


def alias_at(con: duckdb.DuckDBPyConnection, model: str, alias: str, at: datetime | None = None) -> str | None:
    """The version an alias pointed to at time ``at`` (default: now), per the recorded history."""
    if not _recorded(con):
        return None
    at = to_utc_naive(at) if at is not None else datetime.now(UTC).replace(tzinfo=None)
    rows = con.execute(
        """SELECT version FROM audit.alias_history
           WHERE model = ? AND alias = ? AND changed_at <= ?
           ORDER BY changed_at DESC, seq DESC LIMIT 1""",
        [model, alias, at],
    ).fetchall()
    return rows[0][0] if rows else None


def champion_at(con: duckdb.DuckDBPyConnection, model: str, at: datetime) -> str | None:
    """Which version was champion at time ``at`` (None if there was none)."""
    return alias_at(con, model, CHAMPION, at)


def current_alias(con: duckdb.DuckDBPyConnection, model: str, alias: str) -> str | None:
    """The version an alias points to now, per the recorded history."""
    if not _recorded(con):
        return None
    rows = con.execute(
        "SELECT version FROM audit.alias_history WHERE model = ? AND alias = ? ORDER BY seq DESC LIMIT 1",
        [model, alias],
    ).fetchall()
    return rows[0][0] if rows else None


def champion_lineage(con: duckdb.DuckDBPyConnection, model: str) -> list[str]:
    """Champions in force, oldest first: promotions push, rollbacks pop; the last is the current one."""
    stack: list[str] = []
    for change in history(con, model, CHAMPION):
        if change.action == "rollback":
            if stack:
                stack.pop()
        elif change.version is None:
            stack.clear()
        else:
            stack.append(change.version)
    return stack


def cohort_model_names(cohort: str) -> tuple[str, ...]:
    """The registered models that may hold the cohort's champion alias."""
    return tuple(f"{cohort}_{role}" for role in CHAMPION_ROLES)


def cohort_champion(source, cohort: str) -> tuple[str, str] | None:
    """The cohort's champion as ``(model_name, version)``, or None when no serving model holds the alias.

    ``source`` is a warehouse connection (the recorded alias history: the latest champion change
    per model, the most recent one winning) or an ``MlflowClient`` (the aliases MLflow holds; two
    champions there are an inconsistency and raise :class:`RegistryError`).
    """
    names = list(cohort_model_names(cohort))
    if isinstance(source, duckdb.DuckDBPyConnection):
        if not _recorded(source):
            return None
        row = source.execute(
            f"""SELECT model, version FROM (
                    SELECT model, version, seq, row_number() OVER (PARTITION BY model ORDER BY seq DESC) AS rn
                    FROM audit.alias_history WHERE alias = ? AND model IN ({', '.join('?' * len(names))}))
                WHERE rn = 1 AND version IS NOT NULL ORDER BY seq DESC LIMIT 1""",
            [CHAMPION, *names],
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))
    from mlflow.exceptions import MlflowException

    found = []
    for name in names:
        try:
            aliases = source.get_registered_model(name).aliases
        except MlflowException:
            continue
        if CHAMPION in aliases:
            found.append((name, str(aliases[CHAMPION])))
    if len(found) > 1:
        raise RegistryError(f"cohort {cohort} has two champions in MLflow ({', '.join(f'{m} v{v}' for m, v in found)}); "
                            "promote one of them again to clear the other")
    return found[0] if found else None

"""Moving aliases in MLflow, each move recorded in the alias history in the same step: set, promote
(one champion per cohort), rollback along the champion lineage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import duckdb

from clinical_mlops.core.warehouse import transaction
from clinical_mlops.registry.aliases._history import (
    CHAMPION,
    CHAMPION_ROLES,
    COLUMNS,
    AliasChange,
    RegistryError,
    champion_lineage,
    cohort_model_names,
    current_alias,
    ensure_tables,
    history,
)

__all__ = ["inconsistencies", "mlflow_aliases", "promote", "rollback", "set_alias"]


def _client():
    from clinical_mlops.core import tracking  # noqa: F401  (switches MLflow telemetry off on import)
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def mlflow_aliases(model: str) -> dict[str, str]:
    """The aliases MLflow holds now for a registered model ({} if the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return {alias: str(version) for alias, version in _client().get_registered_model(model).aliases.items()}
    except MlflowException:
        return {}


def inconsistencies(con: duckdb.DuckDBPyConnection, model: str) -> list[str]:
    """Differences between MLflow's aliases and the recorded history (e.g. a move made by hand in the UI)."""
    recorded = {change.alias: change.version for change in history(con, model)}  # last wins
    actual = mlflow_aliases(model)
    problems = []
    for alias in sorted(set(recorded) | set(actual)):
        if recorded.get(alias) != actual.get(alias):
            problems.append(
                f"{model}@{alias}: MLflow has {actual.get(alias) or 'nothing'}, "
                f"the alias history has {recorded.get(alias) or 'nothing'}"
            )
    return problems


def set_alias(
    con: duckdb.DuckDBPyConnection,
    model: str,
    alias: str,
    version: str | None,
    *,
    actor: str,
    reason: str,
    policy_sha256: str,
    action: str = "set",
    meaning: str | None = None,
) -> AliasChange | None:
    """Point ``alias`` at ``version`` (None removes it) in MLflow and record the change.

    Returns the recorded change, or None when the alias already points there (nothing to
    record). The MLflow call happens inside the warehouse transaction, so a failed MLflow call
    leaves no record; if the record cannot be committed, the MLflow alias is put back.
    """
    if not actor.strip() or not reason.strip():
        raise RegistryError("an alias change needs an actor and a reason")
    ensure_tables(con)
    version = None if version is None else str(version)
    client = _client()
    if version is not None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_model_version(model, version)
        except MlflowException:
            raise RegistryError(f"{model} has no version {version} in the MLflow registry") from None
    previous = current_alias(con, model, alias)
    if previous is None:  # first recorded change: start from what MLflow holds
        previous = mlflow_aliases(model).get(alias)
    if previous == version and mlflow_aliases(model).get(alias) == version and current_alias(con, model, alias) == version:
        return None
    now = datetime.now(UTC).replace(tzinfo=None)
    change = AliasChange(
        event_id=uuid.uuid4().hex,
        seq=0,
        model=model,
        alias=alias,
        version=version,
        previous_version=previous,
        action=action,
        actor=actor.strip(),
        reason=reason.strip(),
        meaning=meaning or _default_meaning(action, alias, version),
        policy_sha256=policy_sha256,
        changed_at=now,
    )
    mlflow_moved = False
    try:
        with transaction(con):
            seq = int(con.execute("SELECT coalesce(max(seq), 0) + 1 FROM audit.alias_history").fetchall()[0][0])
            change = AliasChange(**{**change.__dict__, "seq": seq})
            con.execute(
                f"INSERT INTO audit.alias_history ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [change.event_id, change.seq, model, alias, version, previous, action, change.actor,
                 change.reason, change.meaning, policy_sha256, now],
            )
            if version is None:
                if alias in mlflow_aliases(model):
                    client.delete_registered_model_alias(model, alias)
            else:
                client.set_registered_model_alias(model, alias, version)
            mlflow_moved = True
    except BaseException:
        if mlflow_moved:  # the record was not committed: undo the move in MLflow
            if previous is None:
                client.delete_registered_model_alias(model, alias)
            else:
                client.set_registered_model_alias(model, alias, previous)
        raise
    return change


def _default_meaning(action: str, alias: str, version: str | None) -> str:
    if action == "promote":
        return f"approved version {version} as {alias} (in clinical use)"
    if action == "rollback":
        return f"withdrew the {alias} and restored version {version}"
    if version is None:
        return f"removed the {alias} alias"
    return f"designated version {version} as {alias}"


def promote(
    con: duckdb.DuckDBPyConnection,
    model: str,
    version: str,
    *,
    actor: str,
    reason: str,
    policy_sha256: str,
    meaning: str | None = None,
) -> AliasChange | None:
    """Make ``version`` the champion (None if it already is), and clear the ``champion`` alias of the
    cohort's other serving model (``<cohort>_candidate`` / ``<cohort>_mitigated``), recorded as ``clear``."""
    change = set_alias(con, model, CHAMPION, str(version), actor=actor, reason=reason,
                       policy_sha256=policy_sha256, action="promote", meaning=meaning)
    for sibling in _siblings(model):
        if current_alias(con, sibling, CHAMPION) is None and CHAMPION not in mlflow_aliases(sibling):
            continue
        set_alias(con, sibling, CHAMPION, None, actor=actor, policy_sha256=policy_sha256, action="clear",
                  reason=f"{model} v{version} became the cohort's champion (one champion per cohort)",
                  meaning=f"withdrew the champion: {model} v{version} replaces it")
    return change


def _siblings(model: str) -> tuple[str, ...]:
    """The other serving models of ``model``'s cohort (none when the name has no serving role)."""
    for role in CHAMPION_ROLES:
        if model.endswith(f"_{role}"):
            cohort = model.removesuffix(f"_{role}")
            return tuple(m for m in cohort_model_names(cohort) if m != model)
    return ()


def rollback(
    con: duckdb.DuckDBPyConnection,
    model: str,
    *,
    actor: str,
    reason: str,
    policy_sha256: str,
) -> AliasChange:
    """Restore the champion before the current one (recorded as a ``rollback`` change)."""
    lineage = champion_lineage(con, model)
    if len(lineage) < 2:
        current = lineage[-1] if lineage else None
        raise RegistryError(
            f"{model}: no earlier champion to restore (current champion: {current or 'none'})"
        )
    restored = set_alias(con, model, CHAMPION, lineage[-2], actor=actor, reason=reason,
                         policy_sha256=policy_sha256, action="rollback")
    if restored is None:  # pragma: no cover - lineage[-2] differs from the current champion
        raise RegistryError(f"{model}: rollback made no change")
    return restored

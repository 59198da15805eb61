"""The model registry with a history: MLflow aliases, and an append-only record of every move.

MLflow keeps only the *current* alias of a registered model (``champion``, ``challenger``), so
"which version was in production on date D" cannot be answered from MLflow alone (mlflow issue
2169). Every alias change made through this module is therefore also appended to
``audit.alias_history`` — model, alias, version, previous version, action, actor, reason, the
meaning of the signature, the governance policy's hash and the UTC time — in the same step, so
the champion at any time T is one query (:func:`champion_at`).

Rows are only ever inserted: a rollback is a new row that restores the previous champion, not
an edit of the one it undoes. Rollback follows the champion *lineage*: promotions push a version,
rollbacks pop one, so two rollbacks after three promotions restore the first champion.

Registered models are named ``<cohort>_<role>`` (``readmission_30d_candidate``); the functions
take any model name. A cohort has **one** champion across the roles that may serve
(:data:`CHAMPION_ROLES`: the candidate and its mitigated challenger): promoting one clears the
``champion`` alias of the other, recorded as a ``clear`` change, and :func:`cohort_champion` says
which (model, version) is the cohort's champion.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np

from clinical_mlops.core.warehouse import table_exists, transaction

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CHAMPION_ROLES",
    "AliasChange",
    "RegistryError",
    "ScoringModel",
    "alias_at",
    "champion_at",
    "champion_lineage",
    "cohort_champion",
    "cohort_model_names",
    "current_alias",
    "ensure_tables",
    "history",
    "inconsistencies",
    "load_scoring_model",
    "mlflow_aliases",
    "model_signature_columns",
    "promote",
    "rollback",
    "set_alias",
    "to_utc_naive",
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


def _client():
    from clinical_mlops.core import tracking  # noqa: F401  (switches MLflow telemetry off on import)
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[AliasChange]:
    names = [d[0] for d in cursor.description]
    return [AliasChange(**dict(zip(names, row))) for row in cursor.fetchall()]


_COLUMNS = "event_id, seq, model, alias, version, previous_version, action, actor, reason, meaning, policy_sha256, changed_at"


def history(con: duckdb.DuckDBPyConnection, model: str, alias: str | None = None) -> list[AliasChange]:
    """Every recorded change of a model's aliases (optionally one alias), oldest first."""
    if not _recorded(con):
        return []
    where, params = "model = ?", [model]
    if alias is not None:
        where, params = where + " AND alias = ?", [model, alias]
    return _rows(con.execute(f"SELECT {_COLUMNS} FROM audit.alias_history WHERE {where} ORDER BY seq", params))


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
                f"INSERT INTO audit.alias_history ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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


def cohort_model_names(cohort: str) -> tuple[str, ...]:
    """The registered models that may hold the cohort's champion alias."""
    return tuple(f"{cohort}_{role}" for role in CHAMPION_ROLES)


def _siblings(model: str) -> tuple[str, ...]:
    """The other serving models of ``model``'s cohort (none when the name has no serving role)."""
    for role in CHAMPION_ROLES:
        if model.endswith(f"_{role}"):
            cohort = model.removesuffix(f"_{role}")
            return tuple(m for m in cohort_model_names(cohort) if m != model)
    return ()


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


@dataclass(frozen=True)
class ScoringModel:
    """A registered model loaded for batch scoring, with the input columns its signature declares."""

    name: str
    version: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    model: object

    @property
    def input_columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def missing_columns(self, columns) -> list[str]:
        return [c for c in self.input_columns if c not in set(columns)]

    def predict_risk(self, frame) -> np.ndarray:
        """Positive-class probability per row; columns are taken by name and typed per the signature."""
        missing = self.missing_columns(frame.columns)
        if missing:
            raise RegistryError(f"{self.name} v{self.version} needs columns the data lacks: {', '.join(missing)}")
        inputs = frame[list(self.input_columns)].astype(
            {**{c: "float64" for c in self.numeric}, **{c: "object" for c in self.categorical}}
        )
        return self.model.predict_proba(inputs)[:, 1]


def model_signature_columns(model: str, version: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(numeric, categorical) input columns from a registered version's MLflow signature."""
    from clinical_mlops.core import tracking  # noqa: F401
    import mlflow

    signature = mlflow.models.get_model_info(f"models:/{model}/{version}").signature
    if signature is None:
        raise RegistryError(f"{model} v{version} was registered without a signature")
    numeric, categorical = [], []
    for spec in signature.inputs.inputs:
        (categorical if str(spec.type) in ("string", "DataType.string") else numeric).append(spec.name)
    return tuple(numeric), tuple(categorical)


def load_scoring_model(model: str, version: str) -> ScoringModel:
    """Load a registered sklearn model (skops, types trusted at logging) with its signature's columns."""
    from clinical_mlops.core import tracking

    numeric, categorical = model_signature_columns(model, version)
    return ScoringModel(model, str(version), numeric, categorical, tracking.load_model(f"models:/{model}/{version}"))

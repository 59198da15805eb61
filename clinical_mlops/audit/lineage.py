"""Model lineage from the warehouse: which data and which code made a model, and the reverse.

Two questions an auditor asks, answered from DuckDB alone (read-only is enough):

* :func:`model_lineage` — which extracts (with their sha256 data versions) and which code (git
  commit, lock file hash, cohort spec hash) trained model version N, with its hyperparameters
  and the hashes of its train/test patient id sets;
* :func:`models_using_extract` — which registered model versions were trained on extract X
  (by extract id or by sha256).

Both follow the same path as Dagster's asset graph (:data:`ASSET_PATH`): an extract is a
``<source>/raw_extract`` partition whose data version is the file's sha256, validated into
``<source>/validated_extract`` and turned into ``<cohort>/encounter_features``, split by
``<cohort>/training_split`` and fitted by ``<cohort>/<role>_model``. The test suite checks this
path against the Definitions' asset graph and against the data versions Dagster recorded.

The other half of a version's record is its MLflow run (package versions, tags, artifacts):
:func:`mlflow_client` opens the registry for the card, the replay and the bundle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

__all__ = [
    "ASSET_PATH",
    "PARTITIONED_ASSETS",
    "ExtractVersion",
    "ModelLineage",
    "asset_path",
    "create_views",
    "mlflow_client",
    "model_lineage",
    "model_versions",
    "models_using_extract",
    "partitioned_assets",
    "resolve_version",
]

ASSET_PATH: tuple[str, ...] = (
    "{source}/raw_extract",
    "{source}/validated_extract",
    "{cohort}/encounter_features",
    "{cohort}/training_split",
    "{cohort}/{role}_model",
)
"""The Dagster assets (user-string keys) between a landed extract and a registered model."""

PARTITIONED_ASSETS = ("{source}/raw_extract", "{source}/validated_extract")
"""Assets with one partition per extract of the source (partition key = extract id)."""

_INPUTS_SQL = """
WITH inputs AS (
    SELECT m.*, unnest(from_json(m.input_extracts_json, '[{"extract_id": "VARCHAR", "sha256": "VARCHAR"}]')) AS input
    FROM ml.model_versions m
)
SELECT model_name, model_version, cohort, role, registered_at, mlflow_run_id, algorithm,
       git_commit, git_dirty, lock_sha256, cohort_spec_sha256,
       input.extract_id AS extract_id, input.sha256 AS sha256
FROM inputs
"""


def asset_path(cohort: str, role: str, source: str) -> list[str]:
    """The asset keys (user strings) from landing to the model, as Dagster names them."""
    return [step.format(cohort=cohort, role=role, source=source) for step in ASSET_PATH]


def partitioned_assets(source: str) -> tuple[str, ...]:
    """The source's extract-partitioned assets (user strings)."""
    return tuple(step.format(source=source) for step in PARTITIONED_ASSETS)


@dataclass(frozen=True)
class ExtractVersion:
    """An input extract as recorded at training time, and what the warehouse holds now."""

    extract_id: str
    sha256: str
    file_name: str | None = None
    size_bytes: int | None = None
    rows_landed: int | None = None
    landed_at: str | None = None
    status: str | None = None
    current_sha256: str | None = None

    @property
    def unchanged(self) -> bool:
        return self.current_sha256 == self.sha256


@dataclass(frozen=True)
class ModelLineage:
    """Everything that produced one registered model version."""

    model_name: str
    model_version: str
    cohort: str
    role: str
    registered_at: str
    mlflow_run_id: str
    algorithm: str
    params: dict[str, Any]
    operating_threshold: float
    train_rows: int
    test_rows: int
    train_ids_sha256: str
    test_ids_sha256: str
    cohort_spec_sha256: str
    git_commit: str
    git_dirty: bool
    lock_sha256: str
    extracts: list[ExtractVersion] = field(default_factory=list)
    source: str = ""
    """The source contract the model was built on, and its version then."""
    source_contract_sha256: str = ""

    @property
    def assets(self) -> list[str]:
        """Dagster asset keys with the extract partitions spelled out."""
        keys: list[str] = []
        for step in asset_path(self.cohort, self.role, self.source):
            if step in partitioned_assets(self.source):
                keys.extend(f"{step}[{e.extract_id}]" for e in self.extracts)
            else:
                keys.append(step)
        return keys

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extracts"] = [{**asdict(e), "unchanged": e.unchanged} for e in self.extracts]
        data["dagster_assets"] = self.assets
        return data


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def resolve_version(con: duckdb.DuckDBPyConnection, model_name: str, version: str | int) -> str:
    """``version`` as stored; ``"latest"`` means the highest registered version of the name."""
    if str(version) != "latest":
        return str(version)
    rows = con.execute(
        "SELECT max(CAST(model_version AS INTEGER)) FROM ml.model_versions WHERE model_name = ?", [model_name]
    ).fetchall()
    if not rows or rows[0][0] is None:
        raise LookupError(f"no registered version of {model_name} in ml.model_versions")
    return str(rows[0][0])


def model_versions(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every registered version (name, version, cohort, role, registered_at), oldest first."""
    return _rows(
        con,
        """SELECT model_name, model_version, cohort, role, registered_at FROM ml.model_versions
           ORDER BY registered_at, model_name, CAST(model_version AS INTEGER)""",
    )


def model_lineage(con: duckdb.DuckDBPyConnection, model_name: str, version: str | int) -> ModelLineage:
    """Which extracts and which code trained ``model_name`` version ``version``."""
    version = resolve_version(con, model_name, version)
    rows = _rows(con, "SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?",
                 [model_name, version])
    if not rows:
        raise LookupError(f"{model_name} version {version} is not in ml.model_versions")
    row = rows[0]
    recorded = json.loads(row["input_extracts_json"])
    current = {
        r["extract_id"]: r
        for r in _rows(con, "SELECT extract_id, file_name, sha256, size_bytes, rows_landed, landed_at, status "
                            "FROM raw.extracts WHERE source = ?", [row.get("source") or ""])
    }
    extracts = []
    for item in recorded:
        now = current.get(item["extract_id"], {})
        landed = now.get("landed_at")
        extracts.append(
            ExtractVersion(
                extract_id=item["extract_id"],
                sha256=item["sha256"],
                file_name=now.get("file_name"),
                size_bytes=now.get("size_bytes"),
                rows_landed=now.get("rows_landed"),
                landed_at=landed.isoformat() if landed is not None else None,
                status=now.get("status"),
                current_sha256=now.get("sha256"),
            )
        )
    return ModelLineage(
        model_name=row["model_name"],
        model_version=str(row["model_version"]),
        cohort=row["cohort"],
        role=row["role"],
        registered_at=row["registered_at"].isoformat(),
        mlflow_run_id=row["mlflow_run_id"],
        algorithm=row["algorithm"],
        params=json.loads(row["params_json"]),
        operating_threshold=float(row["operating_threshold"]),
        train_rows=int(row["train_rows"]),
        test_rows=int(row["test_rows"]),
        train_ids_sha256=row["train_ids_sha256"],
        test_ids_sha256=row["test_ids_sha256"],
        cohort_spec_sha256=row["cohort_spec_sha256"],
        git_commit=row["git_commit"],
        git_dirty=bool(row["git_dirty"]),
        lock_sha256=row["lock_sha256"],
        extracts=extracts,
        source=row.get("source") or "",
        source_contract_sha256=row.get("source_contract_sha256") or "",
    )


def models_using_extract(con: duckdb.DuckDBPyConnection, extract: str) -> list[dict[str, Any]]:
    """Registered versions trained on ``extract`` (an extract id or a sha256 data version)."""
    rows = _rows(
        con,
        f"SELECT * FROM ({_INPUTS_SQL}) WHERE extract_id = ? OR sha256 = ? "
        "ORDER BY registered_at, model_name, CAST(model_version AS INTEGER)",
        [extract, extract],
    )
    for row in rows:
        row["registered_at"] = row["registered_at"].isoformat()
        row["model_version"] = str(row["model_version"])
        row["dagster_assets"] = asset_path(row["cohort"], row["role"], row.get("source") or "")
    return rows


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """``audit.model_inputs``: one row per (model version, input extract), for ad-hoc SQL.

    Needs a writable connection; the functions above work without it.
    """
    con.execute("CREATE SCHEMA IF NOT EXISTS audit")
    con.execute(f"CREATE OR REPLACE VIEW audit.model_inputs AS {_INPUTS_SQL}")


def mlflow_client(tracking_uri: str, artifact_root: Path | str | None = None):
    """An MLflow client on ``tracking_uri`` (configuring the artifact root when given).

    MLflow is imported here, not at module import, so reading lineage from DuckDB stays light.
    """
    from clinical_mlops.core import tracking  # switches telemetry off before mlflow loads

    import mlflow
    from mlflow.tracking import MlflowClient

    if artifact_root is not None:
        tracking.configure(tracking_uri, Path(artifact_root))
    else:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    return MlflowClient()

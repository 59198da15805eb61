"""The DuckDB warehouse: schemas, connections and the tables every stage shares.

Layout (see ARCHITECTURE.md): ``raw`` extracts as landed, ``staging`` validated rows and the
quarantine, ``features`` one table per cohort, ``ml`` splits, predictions and evaluation,
``monitoring`` time series, ``audit`` the ledger mirror. DuckDB allows one writing process;
Dagster serialises writers through the ``duckdb_warehouse`` pool.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

__all__ = [
    "DDL",
    "LOCK_WAIT_SECONDS",
    "MODEL_VERSIONS_DDL",
    "SCHEMAS",
    "LegacyWarehouseError",
    "WarehouseBusyError",
    "columns",
    "connect",
    "insert_frame",
    "quote_identifier",
    "scalar",
    "table_exists",
    "transaction",
]

SCHEMAS: tuple[str, ...] = ("raw", "staging", "features", "ml", "monitoring", "audit")

DDL: tuple[str, ...] = (
    *(f"CREATE SCHEMA IF NOT EXISTS {schema}" for schema in SCHEMAS),
    """CREATE TABLE IF NOT EXISTS raw.extracts (
    source VARCHAR NOT NULL,
    extract_id VARCHAR NOT NULL,
    file_name VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    rows_landed BIGINT NOT NULL,
    status VARCHAR NOT NULL,           -- landed | rejected
    rejection_reason VARCHAR,
    landed_at TIMESTAMP NOT NULL,
    file_rows BIGINT,                  -- the landing step's own count of the file's records
    contract_sha256 VARCHAR NOT NULL,  -- the source contract's version the extract was landed under
    validated_contract_sha256 VARCHAR, -- ... and the one it was last validated against
    PRIMARY KEY (source, extract_id)
)""",
    """CREATE TABLE IF NOT EXISTS ml.splits (
    cohort VARCHAR NOT NULL,
    encounter_id BIGINT NOT NULL,
    patient_key VARCHAR NOT NULL,
    split VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS ml.predictions (
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    mlflow_run_id VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    encounter_id BIGINT NOT NULL,
    label INTEGER NOT NULL,
    score DOUBLE NOT NULL,
    predicted_at TIMESTAMP NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS ml.evaluation_metrics (
    evaluated_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    attribute VARCHAR NOT NULL,
    "group" VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    n_positive BIGINT NOT NULL,
    metric VARCHAR NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE
)""",
)


LOCK_WAIT_SECONDS = float(os.environ.get("CLINICAL_MLOPS_WAREHOUSE_LOCK_WAIT", "300"))


def _open(path: Path, read_only: bool, wait_seconds: float) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting (with backoff) while another process holds DuckDB's write lock."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"the warehouse {path.name} is locked by another process "
                    f"(waited {wait_seconds:.0f} s); retry when the other run finishes"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class WarehouseBusyError(duckdb.IOException):
    """Another process kept the warehouse's single write lock for longer than we wait."""


class LegacyWarehouseError(RuntimeError):
    """The warehouse was built by a version without sources (one table for every extract)."""


def _refuse_legacy_layout(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE (table_schema, table_name) IN "
        "(('raw', 'encounters'), ('staging', 'encounters'))"
    ).fetchone()[0]
    if found:
        con.close()
        raise LegacyWarehouseError(
            f"{path}: this warehouse is in the layout before sources (one raw.encounters table for every "
            "extract, sources mixed); move it aside (or run `make clean`) and land your extracts again with "
            "`clinical-mlops land FILE --source NAME`"
        )


def quote_identifier(name: str) -> str:
    """A column or table name as a DuckDB identifier, safe whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def _cap_memory(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's buffer cap (:func:`~clinical_mlops.core.chunking.bound_memory`: ``CLINICAL_MLOPS_DUCKDB_MEMORY_LIMIT``,
    default ``chunking.DEFAULT_MEMORY_LIMIT``; it spills to disk beyond) instead of its own default of
    80% of the machine's memory. Insertion order is kept: landing numbers rows in file order."""
    from clinical_mlops.core.chunking import bound_memory  # not at the top: chunking imports pandas, which
    # would slow every process that only opens the warehouse (lock waits are timed from process start)

    bound_memory(con, preserve_insertion_order=True)


def connect(
    path: Path | str, *, read_only: bool = False, wait_seconds: float = LOCK_WAIT_SECONDS
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, creating the file, the schemas and the shared tables if needed.

    Dagster's pool serialises writers within an instance; this wait covers everything else
    (a CLI run beside the UI, a notebook) so a second writer waits instead of failing.
    """
    path = Path(path)
    if read_only:
        con = _open(path, True, wait_seconds)
        _refuse_legacy_layout(con, path)
        _cap_memory(con)
        return con
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(path, False, wait_seconds)
    _refuse_legacy_layout(con, path)
    _cap_memory(con)
    for statement in (*DDL, MODEL_VERSIONS_DDL):
        con.execute(statement)
    return con


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: commit when the block succeeds, roll back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame, *, view: str = "rows_to_insert") -> None:
    """Append a pandas frame's rows to ``table`` by column name, in one transaction."""
    con.register(view, frame)
    try:
        with transaction(con):
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
    finally:
        con.unregister(view)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The single value a query returns."""
    row = con.execute(sql, params or []).fetchone()
    return None if row is None else row[0]


def table_exists(con: duckdb.DuckDBPyConnection, qualified_name: str) -> bool:
    schema, table = qualified_name.split(".")
    return bool(
        scalar(
            con,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        )
    )


def columns(con: duckdb.DuckDBPyConnection, qualified_name: str) -> list[str]:
    """Column names of a table or view, in order (empty when it does not exist)."""
    schema, table = qualified_name.split(".")
    return [
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [schema, table],
        ).fetchall()
    ]


MODEL_VERSIONS_DDL = """CREATE TABLE IF NOT EXISTS ml.model_versions (
    registered_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    role VARCHAR NOT NULL,                -- baseline | candidate
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    mlflow_run_id VARCHAR NOT NULL,
    algorithm VARCHAR NOT NULL,
    params_json VARCHAR NOT NULL,
    operating_threshold DOUBLE NOT NULL,
    train_rows BIGINT NOT NULL,
    test_rows BIGINT NOT NULL,
    input_extracts_json VARCHAR NOT NULL, -- [{extract_id, sha256}], the data versions trained on
    train_ids_sha256 VARCHAR NOT NULL,
    test_ids_sha256 VARCHAR NOT NULL,
    cohort_spec_sha256 VARCHAR NOT NULL,
    git_commit VARCHAR NOT NULL,
    git_dirty BOOLEAN NOT NULL,
    lock_sha256 VARCHAR NOT NULL,
    source VARCHAR,                       -- the source contract the cohort is built on
    source_contract_sha256 VARCHAR,       -- ... and its version
    PRIMARY KEY (model_name, model_version)
)"""

"""Validation of landed extracts against their source's contract, in bounded memory.

Every failure is collected; a row that fails any rule goes to the source's quarantine with the
names of the rules it failed (``column:check``, never the value), every other row goes typed and
pseudonymised to ``staging.<source>``. Valid + quarantined = landed, always.

The rules come from one list (:func:`clinical_mlops.sources.derive.rules`) rendered two ways:
SQL finds and names the failing rows of the whole extract in DuckDB; Pandera (the definition)
re-checks the failing rows and a spread sample of the passing ones, and any disagreement
between the two renderings is an error. ``engine="pandera"`` puts every row through Pandera
instead (same result, ~20k rows/s). The key (``key:`` in the contract) is unique within the
extract and, with ``scope: source``, across the source's validated extracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pandera.pandas as pa

from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS
from clinical_mlops.core.warehouse import scalar, transaction
from clinical_mlops.sources import derive, tables
from clinical_mlops.sources.contract import LoadedSource, SourceContract
from clinical_mlops.validation.settings import DEFAULT_ENGINE, ENGINES

__all__ = ["DEFAULT_ENGINE", "ENGINES", "ValidationOutcome", "row_schema", "validate_extract"]


_REASONS_TABLE = "validation_reasons"


@dataclass(frozen=True)
class ValidationOutcome:
    """Counts from validating one extract; ``failures`` maps "column:check" to failing rows.

    ``file_rows`` is the landing step's own count of the file's data records
    (``raw.extracts.file_rows``, taken apart from the insert).
    """

    extract_id: str
    rows_landed: int
    rows_valid: int
    rows_quarantined: int
    failures: dict[str, int]
    file_rows: int | None = None
    source: str = ""
    contract_sha256: str = ""

    @property
    def reconciles(self) -> bool:
        """Every record of the file landed, and every landed row is valid or quarantined."""
        return (self.file_rows is not None and self.file_rows == self.rows_landed
                and self.rows_valid + self.rows_quarantined == self.rows_landed)


def row_schema(contract: SourceContract) -> pa.DataFrameSchema:
    """The contract's Pandera schema without its cross-row (key) check: what one chunk decides alone."""
    schema = derive.pandera_schema(contract)
    return pa.DataFrameSchema(schema.columns, strict=schema.strict, ordered=schema.ordered, coerce=False,
                              name=schema.name)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted_columns(contract: SourceContract) -> str:
    return ", ".join('"' + c.replace('"', '""') + '"' for c in contract.columns)


def _pandera_reasons(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> dict[int, set[str]]:
    frame = frame.set_index("_row_number")
    frame.index.name = None
    return {int(k): v for k, v in derive.pandera_failures(frame, schema).items()}


def _insert_reasons(con: duckdb.DuckDBPyConnection, reasons: dict[int, set[str]]) -> None:
    if not reasons:
        return
    pairs = pd.DataFrame([(row, reason) for row, names in reasons.items() for reason in names],
                         columns=["row_number", "reason"]).astype({"row_number": "int64", "reason": "object"})
    con.register("chunk_reasons", pairs)
    try:
        con.execute(f"INSERT INTO {_REASONS_TABLE} SELECT row_number, reason FROM chunk_reasons")
    finally:
        con.unregister("chunk_reasons")


def _chunks(con: duckdb.DuckDBPyConnection, sql: str, extract_id: str, chunk_rows: int, raw: str):
    """Frames of ``sql`` (filtered on ``_extract_id = ?``), ``chunk_rows`` landed rows at a time.

    On this connection, not a cursor: the reasons live in a temp table only it sees.
    """
    low, high = con.execute(f"SELECT min(_row_number), max(_row_number) FROM {raw} WHERE _extract_id = ?",
                            [extract_id]).fetchone()
    for start in range(int(low), int(high) + 1, chunk_rows):
        frame = con.execute(sql + " AND _row_number BETWEEN ? AND ? ORDER BY _row_number",
                            [extract_id, start, start + chunk_rows - 1]).df()
        if not frame.empty:
            yield frame


def _row_rules(con: duckdb.DuckDBPyConnection, source: LoadedSource, extract_id: str, *, engine: str,
               chunk_rows: int, crosscheck_rows: int) -> None:
    """Per-row rules into the reasons table, SQL and Pandera checked against each other."""
    contract = source.contract
    raw = tables.raw_table(source.name)
    per_row = tuple(r for r in derive.rules(contract) if not r.cross_row)
    schema = row_schema(contract)
    select = f"SELECT _row_number, {_quoted_columns(contract)} FROM {raw} WHERE _extract_id = ?"
    if engine == "pandera":
        for frame in _chunks(con, select, extract_id, chunk_rows, raw):
            _insert_reasons(con, _pandera_reasons(frame, schema))
        return
    failing = "\nUNION ALL\n".join(
        f"SELECT _row_number, {_literal(r.name)} FROM {raw} WHERE _extract_id = ? AND NOT coalesce({r.sql}, FALSE)"
        for r in per_row
    )
    con.execute(f"INSERT INTO {_REASONS_TABLE} {failing}", [extract_id] * len(per_row))
    suspects = f"SELECT DISTINCT row_number FROM {_REASONS_TABLE}"
    for frame in _chunks(con, select + f" AND _row_number IN ({suspects})", extract_id, chunk_rows, raw):
        named = _pandera_reasons(frame, schema)
        rows = [int(r) for r in frame["_row_number"]]
        sql_named = {r: set() for r in rows}
        placeholders = ", ".join("?" * len(rows))
        for row, reason in con.execute(f"SELECT row_number, reason FROM {_REASONS_TABLE} WHERE row_number IN "
                                       f"({placeholders})", rows).fetchall():
            sql_named[int(row)].add(reason)
        if named != sql_named:
            raise RuntimeError(f"validation rules of {source.name} disagree: SQL and Pandera name different "
                               "failures for the same rows")
    if crosscheck_rows > 0:
        total = int(scalar(con, f"SELECT count(*) FROM {raw} WHERE _extract_id = ?", [extract_id]))
        stride = max(1, total // crosscheck_rows)
        sample = con.execute(
            select + f" AND _row_number % ? = 0 AND _row_number NOT IN ({suspects}) ORDER BY _row_number LIMIT ?",
            [extract_id, stride, crosscheck_rows]).df()
        if not sample.empty and _pandera_reasons(sample, schema):
            raise RuntimeError(f"validation rules of {source.name} disagree: Pandera fails rows that SQL passes")


def _key_rules(con: duckdb.DuckDBPyConnection, source: LoadedSource, extract_id: str) -> None:
    """The key: unique within the extract, and (scope ``source``) against the source's other extracts."""
    key = source.contract.key
    if key is None:
        return
    rule = next(r for r in derive.rules(source.contract) if r.cross_row)
    raw, staging = tables.raw_table(source.name), tables.staging_table(source.name)
    con.execute(
        f"""INSERT INTO {_REASONS_TABLE}
        SELECT _row_number, {_literal(rule.name)} FROM (
            SELECT _row_number, coalesce({rule.sql}, FALSE) AS passes FROM {raw} WHERE _extract_id = ?
        ) WHERE NOT passes""",
        [extract_id],
    )
    typed = tables.staging_columns(source.contract)
    if key.scope != "source" or any(c not in typed for c in key.columns):
        return
    columns = ", ".join('"' + c.replace('"', '""') + '"' for c in key.columns)
    earlier = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in key.columns)
    con.execute(
        f"""INSERT INTO {_REASONS_TABLE}
        SELECT _row_number, {_literal(key.columns[0] + ':duplicate_across_extracts')} FROM {raw}
        WHERE _extract_id = ? AND ({columns}) IN (SELECT ({earlier}) FROM {staging} WHERE extract_id <> ?)""",
        [extract_id, extract_id],
    )


def validate_extract(
    con: duckdb.DuckDBPyConnection,
    source: LoadedSource,
    extract_id: str,
    *,
    pseudonym_key: bytes,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    engine: str = DEFAULT_ENGINE,
    crosscheck_rows: int = 20_000,
) -> ValidationOutcome:
    """Validate one landed extract of ``source``; valid rows to staging, the rest to quarantine.

    Reasons are staged in a temp table and swapped into the source's staging and quarantine in
    one transaction, so a failure leaves the warehouse unchanged; re-running replaces this
    extract's rows (idempotent). The extract records the contract version it was validated against.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    tables.ensure_source_tables(con, source)
    raw, staging = tables.raw_table(source.name), tables.staging_table(source.name)
    quarantine = tables.quarantine_table(source.name)
    rows_landed = int(scalar(con, f"SELECT count(*) FROM {raw} WHERE _extract_id = ?", [extract_id]))
    if rows_landed == 0:
        raise ValueError(f"extract {extract_id} of source {source.name} has no landed rows: land it first")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_REASONS_TABLE} (row_number BIGINT NOT NULL, reason VARCHAR NOT NULL)")
    try:
        _row_rules(con, source, extract_id, engine=engine, chunk_rows=chunk_rows, crosscheck_rows=crosscheck_rows)
        _key_rules(con, source, extract_id)
        now = datetime.now(UTC).replace(tzinfo=None)
        with transaction(con):
            con.execute(f"DELETE FROM {staging} WHERE extract_id = ?", [extract_id])
            con.execute(f"DELETE FROM {quarantine} WHERE extract_id = ?", [extract_id])
            con.execute(
                f"""INSERT INTO {quarantine}
                SELECT ?, row_number, string_agg(DISTINCT reason, '; ' ORDER BY reason), ?
                FROM {_REASONS_TABLE} GROUP BY row_number""",
                [extract_id, now],
            )
            con.execute(
                f"""INSERT INTO {staging}
                SELECT {tables.typed_select(source.contract, pseudonym_key)}
                FROM {raw} r
                WHERE r._extract_id = ? AND r._row_number NOT IN (SELECT row_number FROM {_REASONS_TABLE})""",
                [extract_id],
            )
            con.execute("UPDATE raw.extracts SET validated_contract_sha256 = ? WHERE source = ? AND extract_id = ?",
                        [source.sha256, source.name, extract_id])
        failures = {
            reason: int(n) for reason, n in con.execute(
                f"SELECT reason, count(DISTINCT row_number) FROM {_REASONS_TABLE} GROUP BY reason ORDER BY reason"
            ).fetchall()
        }
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_REASONS_TABLE}")
    valid = int(scalar(con, f"SELECT count(*) FROM {staging} WHERE extract_id = ?", [extract_id]))
    quarantined = int(scalar(con, f"SELECT count(*) FROM {quarantine} WHERE extract_id = ?", [extract_id]))
    file_rows = scalar(con, "SELECT file_rows FROM raw.extracts WHERE source = ? AND extract_id = ?",
                       [source.name, extract_id])
    return ValidationOutcome(
        extract_id=extract_id, rows_landed=rows_landed, rows_valid=valid, rows_quarantined=quarantined,
        failures=dict(sorted(failures.items())), file_rows=None if file_rows is None else int(file_rows),
        source=source.name, contract_sha256=source.sha256,
    )

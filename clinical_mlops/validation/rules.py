"""Validation of landed extracts: a Pandera schema of the declared format, applied lazily.

Every failure is collected; a row that fails any check goes to ``staging.quarantine`` with
the names of the checks it failed (column and check, never the value), every other row goes
typed and pseudonymised to ``staging.encounters``. Valid + quarantined = landed, always.

Scale: an extract is validated in chunks of landed rows, so memory does not grow with its
size. The per-row rules are declared once (:func:`format_rules`) and rendered both as the
Pandera schema and as SQL; by default SQL finds the failing rows of the bulk and Pandera
names their reasons (Pandera's pandas backend checks ~20k rows/s on this 50-column format,
too slow for ten million rows). Cross-row rules (duplicate encounter ids) run in SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pandera.pandas as pa

from clinical_mlops.ingestion import deid, diabetes130
from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS
from clinical_mlops.core.warehouse import columns, scalar, transaction

__all__ = ["DEFAULT_ENGINE", "ENGINES", "INTEGER_CODE_COLUMNS", "STAGING_DDL", "FormatRule", "ValidationOutcome",
    "find_failures", "format_rules", "raw_encounter_schema", "row_level_schema", "row_passes_sql", "rule_sql",
    "validate_extract"]

STAGING_DDL = """CREATE TABLE IF NOT EXISTS staging.encounters (
    extract_id VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    encounter_id BIGINT NOT NULL,
    patient_key VARCHAR NOT NULL,
    race VARCHAR, gender VARCHAR, age VARCHAR, weight VARCHAR,
    admission_type_id INTEGER, discharge_disposition_id INTEGER, admission_source_id INTEGER,
    time_in_hospital INTEGER, payer_code VARCHAR, medical_specialty VARCHAR,
    num_lab_procedures INTEGER, num_procedures INTEGER, num_medications INTEGER,
    number_outpatient INTEGER, number_emergency INTEGER, number_inpatient INTEGER,
    diag_1 VARCHAR, diag_2 VARCHAR, diag_3 VARCHAR, number_diagnoses INTEGER,
    max_glu_serum VARCHAR, "A1Cresult" VARCHAR,
    {medications},
    change VARCHAR, "diabetesMed" VARCHAR, readmitted VARCHAR
)""".format(medications=", ".join(f'"{m}" VARCHAR' for m in diabetes130.MEDICATIONS))

INTEGER_CODE_COLUMNS = ("admission_type_id", "discharge_disposition_id", "admission_source_id")


@dataclass(frozen=True)
class FormatRule:
    """One per-row check of the declared format, rendered both as a Pandera check and as SQL.

    ``kind`` is ``in_vocabulary`` (``arg``: allowed values), ``pattern`` (``arg``: a regular
    expression matched against the whole value, ASCII semantics as in DuckDB's RE2) or
    ``integer_range`` (``arg``: inclusive bounds). The list :func:`format_rules` is the single
    definition of the format; :func:`raw_encounter_schema` and :func:`rule_sql` are two
    renderings of it, tested to agree row for row.
    """

    column: str
    check: str
    kind: str
    arg: tuple

    @property
    def reason(self) -> str:
        return f"{self.column}:{self.check}"


_ID_PATTERN = r"[1-9][0-9]{0,17}"
"""Canonical ids only: a zero-padded id would pass uniqueness as text and pseudonymise differently."""


def format_rules() -> tuple[FormatRule, ...]:
    """Every per-row rule of the Diabetes 130 format, in column order."""
    rules: dict[str, FormatRule] = {
        diabetes130.ENCOUNTER_ID: FormatRule(diabetes130.ENCOUNTER_ID, "positive_integer", "pattern", (_ID_PATTERN,)),
        diabetes130.PATIENT_ID: FormatRule(diabetes130.PATIENT_ID, "positive_integer", "pattern", (_ID_PATTERN,)),
    }
    for column, vocabulary in diabetes130.CATEGORICAL_VOCABULARIES.items():
        allowed = (*vocabulary, diabetes130.MISSING) if column in diabetes130.NULLABLE_COLUMNS else vocabulary
        rules[column] = FormatRule(column, "in_vocabulary", "in_vocabulary", tuple(allowed))
    for column, (low, high) in diabetes130.COUNT_COLUMNS.items():
        rules[column] = FormatRule(column, f"integer_in_{low}_{high}", "integer_range", (low, high))
    for i in (1, 2, 3):
        column = f"diag_{i}"
        rules[column] = FormatRule(column, "icd9_code", "pattern", (f"{diabetes130.ICD9_PATTERN}|\\?",))
    return tuple(rules[c] for c in diabetes130.COLUMNS)


def _pandera_check(rule: FormatRule) -> pa.Check:
    """The pandas rendering of a rule (nulls are left to Pandera's ``not_nullable``)."""
    if rule.kind == "in_vocabulary":
        allowed = frozenset(rule.arg)
        return pa.Check(lambda values: values.isin(allowed), name=rule.check)
    if rule.kind == "pattern":
        (pattern,) = rule.arg
        return pa.Check(lambda values: values.str.fullmatch(pattern, flags=re.ASCII, na=False), name=rule.check)
    if rule.kind == "integer_range":
        low, high = rule.arg

        def check(values: pd.Series) -> pd.Series:
            digits = values.str.fullmatch(r"[0-9]+", na=False)
            return pd.to_numeric(values.where(digits), errors="coerce").between(low, high)

        return pa.Check(check, name=rule.check)
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def rule_sql(rule: FormatRule) -> str:
    """The SQL rendering of a rule: true when a non-null value passes."""
    column = f'"{rule.column}"'
    if rule.kind == "in_vocabulary":
        return f"{column} IN ({', '.join(_sql_literal(v) for v in rule.arg)})"
    if rule.kind == "pattern":
        return f"regexp_full_match({column}, {_sql_literal(rule.arg[0])})"
    if rule.kind == "integer_range":
        low, high = rule.arg
        return (f"(regexp_full_match({column}, '[0-9]+') "
                f"AND TRY_CAST({column} AS DOUBLE) BETWEEN {low} AND {high})")
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def row_passes_sql() -> str:
    """SQL true for a row that passes every per-row rule (non-null and the rule's check)."""
    return " AND ".join(f'("{r.column}" IS NOT NULL AND {rule_sql(r)})' for r in format_rules())


def raw_encounter_schema() -> pa.DataFrameSchema:
    """The declared Diabetes 130 format, every value still text as landed.

    Per-row rules come from :func:`format_rules`; ``encounter_id`` is unique within an extract
    (a cross-row rule: the chunked validator enforces it in SQL under the same reason name).
    """
    columns = {
        rule.column: pa.Column(str, [_pandera_check(rule)], unique=rule.column == diabetes130.ENCOUNTER_ID)
        for rule in format_rules()
    }
    return pa.DataFrameSchema(columns, strict=True, coerce=False, name="diabetes130_raw")


def row_level_schema(schema: pa.DataFrameSchema) -> pa.DataFrameSchema:
    """``schema`` without its cross-row (uniqueness) checks: what one chunk can decide alone."""
    unique = [name for name, column in schema.columns.items() if column.unique]
    return schema.update_columns({name: {"unique": False} for name in unique}) if unique else schema


@dataclass(frozen=True)
class ValidationOutcome:
    """Counts from validating one extract; ``failures`` maps "column:check" to failing rows.

    ``file_rows`` is the landing step's own count of the file's data records
    (``raw.extracts.file_rows``, taken apart from the insert), ``None`` when the extract was
    landed before that count existed.
    """

    extract_id: str
    rows_landed: int
    rows_valid: int
    rows_quarantined: int
    failures: dict[str, int]
    file_rows: int | None = None

    @property
    def reconciles(self) -> bool:
        """Every record of the file landed, and every landed row is valid or quarantined."""
        return (self.file_rows is not None and self.file_rows == self.rows_landed
                and self.rows_valid + self.rows_quarantined == self.rows_landed)


def find_failures(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> dict[int, set[str]]:
    """Row position → names of the checks it failed ("column:check"), every failure collected."""
    reasons: dict[int, set[str]] = {}
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        row_cases = cases[cases["index"].notna()]
        for column, check, index in row_cases[["column", "check", "index"]].itertuples(index=False):
            label = "duplicate_encounter_id" if check == "field_uniqueness" else check
            reasons.setdefault(int(index), set()).add(f"{column}:{label}")
        frame_level = cases[cases["index"].isna()]
        if not frame_level.empty:  # column-level failures would affect every row
            summary = sorted(f"{c}:{k}" for c, k in frame_level[["column", "check"]].itertuples(index=False))
            raise ValueError(f"extract fails the declared format as a whole: {', '.join(summary)}")
    return reasons


def _typed_select(key: bytes) -> str:
    """SQL turning raw text columns into typed staging columns, ids pseudonymised."""
    def nullable(column: str) -> str:
        return f"NULLIF(\"{column}\", '{diabetes130.MISSING}')"

    parts = [
        "r._extract_id AS extract_id",
        "r._row_number AS row_number",
        "CAST(r.encounter_id AS BIGINT) AS encounter_id",
        f"{deid.hmac_sql('r.patient_nbr', key)} AS patient_key",
    ]
    for column in diabetes130.COLUMNS[2:]:
        if column in diabetes130.COUNT_COLUMNS or column in INTEGER_CODE_COLUMNS:
            parts.append(f'CAST("{column}" AS INTEGER) AS "{column}"')
        elif column in diabetes130.NULLABLE_COLUMNS:
            parts.append(f'{nullable(column)} AS "{column}"')
        else:
            parts.append(f'"{column}"')
    return ",\n       ".join(parts)


ENGINES = ("sql", "pandera")
DEFAULT_ENGINE = "sql"
"""SQL finds the failing rows, Pandera names their reasons (same result as ``pandera``, much faster)."""

_REASONS_TABLE = "validation_reasons"
_SUSPECTS_TABLE = "validation_suspects"


def _quoted_columns() -> str:
    return ", ".join(f'"{c}"' for c in diabetes130.COLUMNS)


def _insert_reasons(con: duckdb.DuckDBPyConnection, reasons: dict[int, set[str]]) -> None:
    if not reasons:
        return
    pairs = pd.DataFrame(
        [(row, reason) for row, names in reasons.items() for reason in names], columns=["row_number", "reason"]
    ).astype({"row_number": "int64", "reason": "object"})
    con.register("chunk_reasons", pairs)
    try:
        con.execute(f"INSERT INTO {_REASONS_TABLE} SELECT row_number, reason FROM chunk_reasons")
    finally:
        con.unregister("chunk_reasons")


def _chunk_failures(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> dict[int, set[str]]:
    """Pandera on one chunk indexed by landed row number; returns row number → reasons."""
    frame = frame.set_index("_row_number")
    frame.index.name = None
    return find_failures(frame, schema)


def _row_checks_in_chunks(
    con: duckdb.DuckDBPyConnection, extract_id: str, schema: pa.DataFrameSchema, *,
    engine: str, chunk_rows: int, crosscheck_rows: int,
) -> None:
    """Per-row rules, ``chunk_rows`` landed rows at a time, reasons into the temp table.

    ``pandera``: every row through Pandera. ``sql``: the rules compiled to SQL pick the rows
    that fail something; Pandera (the definition) names their reasons, and checks a spread
    sample of the rows SQL passed. Any disagreement between the two renderings is an error.
    """
    low, high = con.execute(
        "SELECT min(_row_number), max(_row_number) FROM raw.encounters WHERE _extract_id = ?", [extract_id]
    ).fetchone()
    select = f"SELECT _row_number, {_quoted_columns()} FROM raw.encounters r WHERE r._extract_id = ?"
    if engine == "sql":
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {_SUSPECTS_TABLE} AS
            SELECT _row_number FROM raw.encounters
            WHERE _extract_id = ? AND NOT coalesce({row_passes_sql()}, FALSE)""",
            [extract_id],
        )
        select += f" AND r._row_number IN (SELECT _row_number FROM {_SUSPECTS_TABLE})"
    for start in range(int(low), int(high) + 1, chunk_rows):
        frame = con.execute(
            select + " AND r._row_number BETWEEN ? AND ? ORDER BY r._row_number",
            [extract_id, start, start + chunk_rows - 1],
        ).df()
        if frame.empty:
            continue
        reasons = _chunk_failures(frame, schema)
        if engine == "sql" and len(reasons) != len(frame):
            raise RuntimeError("validation rules disagree: SQL flagged rows that Pandera passes")
        _insert_reasons(con, reasons)
    if engine == "sql" and crosscheck_rows > 0:
        stride = max(1, (int(high) - int(low) + 1) // crosscheck_rows)
        sample = con.execute(
            f"""SELECT _row_number, {_quoted_columns()} FROM raw.encounters
            WHERE _extract_id = ? AND (_row_number - ?) % ? = 0
              AND _row_number NOT IN (SELECT _row_number FROM {_SUSPECTS_TABLE})
            ORDER BY _row_number LIMIT ?""",
            [extract_id, int(low), stride, crosscheck_rows],
        ).df()
        if not sample.empty and _chunk_failures(sample, schema):
            raise RuntimeError("validation rules disagree: Pandera fails rows that SQL passes")


def _cross_row_checks(con: duckdb.DuckDBPyConnection, extract_id: str) -> None:
    """Duplicate encounter ids within the extract and against other validated extracts, in SQL."""
    con.execute(
        f"""INSERT INTO {_REASONS_TABLE}
        SELECT _row_number, 'encounter_id:duplicate_encounter_id' FROM (
            SELECT _row_number, count(*) OVER (PARTITION BY encounter_id) AS n
            FROM raw.encounters WHERE _extract_id = ? AND encounter_id IS NOT NULL
        ) WHERE n > 1""",
        [extract_id],
    )
    con.execute(
        f"""INSERT INTO {_REASONS_TABLE}
        SELECT _row_number, 'encounter_id:duplicate_across_extracts'
        FROM raw.encounters
        WHERE _extract_id = ?
          AND encounter_id IN (
              SELECT CAST(encounter_id AS VARCHAR) FROM staging.encounters WHERE extract_id <> ?
          )""",
        [extract_id, extract_id],
    )


def validate_extract(
    con: duckdb.DuckDBPyConnection,
    extract_id: str,
    *,
    pseudonym_key: bytes,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    engine: str = DEFAULT_ENGINE,
    crosscheck_rows: int = 20_000,
) -> ValidationOutcome:
    """Validate one landed extract; write valid rows to staging and the rest to quarantine.

    Memory is bounded by ``chunk_rows`` whatever the extract's size: per-row rules run on
    chunks of landed rows (see :func:`_row_checks_in_chunks` for the two engines), cross-row
    rules in SQL. Reasons are staged in a temp table and swapped into ``staging`` in one
    transaction, so a failure leaves the warehouse unchanged. Re-running replaces this
    extract's staging and quarantine rows, so it is idempotent.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    con.execute(STAGING_DDL)
    rows_landed = int(scalar(con, "SELECT count(*) FROM raw.encounters WHERE _extract_id = ?", [extract_id]))
    if rows_landed == 0:
        raise ValueError(f"extract {extract_id} has no landed rows: land it first")
    schema = row_level_schema(raw_encounter_schema())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_REASONS_TABLE} (row_number BIGINT NOT NULL, reason VARCHAR NOT NULL)")
    try:
        _row_checks_in_chunks(
            con, extract_id, schema, engine=engine, chunk_rows=chunk_rows, crosscheck_rows=crosscheck_rows
        )
        _cross_row_checks(con, extract_id)
        now = datetime.now(UTC).replace(tzinfo=None)
        with transaction(con):
            con.execute("DELETE FROM staging.encounters WHERE extract_id = ?", [extract_id])
            con.execute("DELETE FROM staging.quarantine WHERE extract_id = ?", [extract_id])
            con.execute(
                f"""INSERT INTO staging.quarantine
                SELECT ?, row_number, string_agg(DISTINCT reason, '; ' ORDER BY reason), ?
                FROM {_REASONS_TABLE} GROUP BY row_number""",
                [extract_id, now],
            )
            con.execute(
                f"""INSERT INTO staging.encounters
                SELECT {_typed_select(pseudonym_key)}
                FROM raw.encounters r
                WHERE r._extract_id = ?
                  AND r._row_number NOT IN (SELECT row_number FROM {_REASONS_TABLE})""",
                [extract_id],
            )
        failures = {
            reason: int(n)
            for reason, n in con.execute(
                f"SELECT reason, count(DISTINCT row_number) FROM {_REASONS_TABLE} GROUP BY reason ORDER BY reason"
            ).fetchall()
        }
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_REASONS_TABLE}")
        con.execute(f"DROP TABLE IF EXISTS {_SUSPECTS_TABLE}")
    valid = int(scalar(con, "SELECT count(*) FROM staging.encounters WHERE extract_id = ?", [extract_id]))
    quarantined = int(scalar(con, "SELECT count(*) FROM staging.quarantine WHERE extract_id = ?", [extract_id]))
    return ValidationOutcome(
        extract_id=extract_id,
        rows_landed=rows_landed,
        rows_valid=valid,
        rows_quarantined=quarantined,
        failures=dict(sorted(failures.items())),
        file_rows=_file_rows(con, extract_id),
    )


def _file_rows(con: duckdb.DuckDBPyConnection, extract_id: str) -> int | None:
    """The landing step's count of the file's records (``None`` for an extract landed without one)."""
    if "file_rows" not in columns(con, "raw.extracts"):
        return None
    value = scalar(con, "SELECT file_rows FROM raw.extracts WHERE extract_id = ?", [extract_id])
    return None if value is None else int(value)

"""Validation of landed extracts: a Pandera schema of the declared format, applied lazily.

Every failure is collected; a row that fails any check goes to ``staging.quarantine`` with
the names of the checks it failed (column and check, never the value), every other row goes
typed and pseudonymised to ``staging.encounters``. Valid + quarantined = landed, always.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pandera.pandas as pa

from clinical_mlops import deid, diabetes130
from clinical_mlops.warehouse import scalar, transaction

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


def _in_vocabulary(column: str) -> pa.Check:
    allowed = list(diabetes130.CATEGORICAL_VOCABULARIES[column])
    if column in diabetes130.NULLABLE_COLUMNS:
        allowed.append(diabetes130.MISSING)
    allowed_set = frozenset(allowed)
    return pa.Check(lambda values: values.isin(allowed_set), name="in_vocabulary")


def _matches(pattern: str, name: str) -> pa.Check:
    """Whole-value regular-expression match, reported under a short check name."""
    return pa.Check(lambda values: values.str.fullmatch(pattern, na=False), name=name)


def _integer_in_range(low: int, high: int) -> pa.Check:
    def check(values: pd.Series) -> pd.Series:
        numbers = pd.to_numeric(values.where(values.str.fullmatch(r"\d+", na=False)), errors="coerce")
        return numbers.between(low, high)

    return pa.Check(check, name=f"integer_in_{low}_{high}")


def raw_encounter_schema() -> pa.DataFrameSchema:
    """The declared Diabetes 130 format, every value still text as landed."""
    columns: dict[str, pa.Column] = {
        diabetes130.ENCOUNTER_ID: pa.Column(
            str, [_matches(r"\d{1,18}", "positive_integer")], unique=True
        ),
        diabetes130.PATIENT_ID: pa.Column(str, [_matches(r"\d{1,18}", "positive_integer")]),
        **{c: pa.Column(str, [_in_vocabulary(c)]) for c in diabetes130.CATEGORICAL_VOCABULARIES},
        **{c: pa.Column(str, [_integer_in_range(lo, hi)]) for c, (lo, hi) in diabetes130.COUNT_COLUMNS.items()},
        **{
            f"diag_{i}": pa.Column(
                str,
                [_matches(f"{diabetes130.ICD9_PATTERN}|\\?", "icd9_code")],
            )
            for i in (1, 2, 3)
        },
    }
    return pa.DataFrameSchema(
        {name: columns[name] for name in diabetes130.COLUMNS},
        strict=True,
        coerce=False,
        name="diabetes130_raw",
    )


@dataclass(frozen=True)
class ValidationOutcome:
    """Counts from validating one extract; ``failures`` maps "column:check" to failing rows."""

    extract_id: str
    rows_landed: int
    rows_valid: int
    rows_quarantined: int
    failures: dict[str, int]

    @property
    def reconciles(self) -> bool:
        return self.rows_valid + self.rows_quarantined == self.rows_landed


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


def validate_extract(
    con: duckdb.DuckDBPyConnection, extract_id: str, *, pseudonym_key: bytes
) -> ValidationOutcome:
    """Validate one landed extract; write valid rows to staging and the rest to quarantine.

    Re-running replaces this extract's staging and quarantine rows, so it is idempotent.
    """
    con.execute(STAGING_DDL)
    frame = con.execute(
        f"SELECT _row_number, {', '.join(chr(34) + c + chr(34) for c in diabetes130.COLUMNS)} "
        "FROM raw.encounters WHERE _extract_id = ? ORDER BY _row_number",
        [extract_id],
    ).df()
    if frame.empty:
        raise ValueError(f"extract {extract_id} has no landed rows: land it first")
    row_numbers = frame.pop("_row_number").to_numpy()
    reasons = find_failures(frame, raw_encounter_schema())

    # An encounter id already validated from another extract is a duplicate too.
    seen_elsewhere = {
        row[0]
        for row in con.execute(
            "SELECT CAST(encounter_id AS VARCHAR) FROM staging.encounters WHERE extract_id <> ?", [extract_id]
        ).fetchall()
    }
    if seen_elsewhere:
        clash = frame[diabetes130.ENCOUNTER_ID].isin(seen_elsewhere).to_numpy().nonzero()[0]
        for position in clash:
            reasons.setdefault(int(position), set()).add("encounter_id:duplicate_across_extracts")

    failures = Counter(reason for row in reasons.values() for reason in row)
    quarantine = pd.DataFrame(
        {
            "row_number": [int(row_numbers[p]) for p in sorted(reasons)],
            "reasons": ["; ".join(sorted(reasons[p])) for p in sorted(reasons)],
        },
        columns=["row_number", "reasons"],
    ).astype({"row_number": "int64", "reasons": "object"})
    now = datetime.now(UTC).replace(tzinfo=None)
    con.register("quarantined_rows", quarantine)
    try:
        with transaction(con):
            con.execute("DELETE FROM staging.encounters WHERE extract_id = ?", [extract_id])
            con.execute("DELETE FROM staging.quarantine WHERE extract_id = ?", [extract_id])
            con.execute(
                "INSERT INTO staging.quarantine SELECT ?, row_number, reasons, ? FROM quarantined_rows",
                [extract_id, now],
            )
            con.execute(
                f"""INSERT INTO staging.encounters
                SELECT {_typed_select(pseudonym_key)}
                FROM raw.encounters r
                WHERE r._extract_id = ?
                  AND r._row_number NOT IN (SELECT row_number FROM quarantined_rows)""",
                [extract_id],
            )
    finally:
        con.unregister("quarantined_rows")
    valid = int(scalar(con, "SELECT count(*) FROM staging.encounters WHERE extract_id = ?", [extract_id]))
    return ValidationOutcome(
        extract_id=extract_id,
        rows_landed=len(frame),
        rows_valid=valid,
        rows_quarantined=len(quarantine),
        failures=dict(sorted(failures.items())),
    )

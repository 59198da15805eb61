"""Cohort feature tables built in DuckDB SQL, their Pandera schema, and the patient split.

The heavy lifting stays in the warehouse: features are one ``CREATE TABLE AS`` over the
validated encounters; the feature schema is checked in chunks, and only the model-fitting
step pulls rows into memory (at most ``max_training_rows`` of them, see
:func:`load_training_sample`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:  # imported where used: the feature SQL loads without pandas or Pandera
    import pandas as pd
    import pandera.pandas as pa

from clinical_mlops.sources import contract, derive, tables
from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS, iter_frames
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.features.columns import FeatureCheck, feature_columns, feature_sql_version
from clinical_mlops.core.warehouse import scalar, transaction

__all__ = ["FEATURE_CHECK_ENGINES", "FeatureBuild", "FeatureSchemaCheck", "SplitSummary",
    "TrainingSample", "assign_split", "build_features", "cohort_rows_sql", "external_extracts", "check_feature_schema", "encounter_base_sql",
    "feature_schema", "feature_schema_sql", "feature_sql_version", "iter_split_frames", "load_features",
    "load_split_frame", "load_training_sample", "summarise_split"]

_COLUMN_TYPES = {"int": int, "float": float, "str": str}

def encounter_base_sql(spec: CohortSpec) -> str:
    """The cohort's feature SQL over ``source_rows``: its source's base SQL, then its own."""
    if not spec.cohort_sql:
        return spec.base_sql
    return f"WITH cohort_base AS ({spec.base_sql})\n{spec.cohort_sql}"


@dataclass(frozen=True)
class FeatureBuild:
    rows_in: int
    rows_excluded: dict[str, int]
    rows_out: int
    positives: int

    @property
    def prevalence(self) -> float:
        return self.positives / self.rows_out if self.rows_out else float("nan")


def _row_patient_key() -> str:
    """A per-row key for a source without a patient id (split ``row``): each row is its own unit."""
    return "substr(sha256(b.extract_id || ':' || CAST(b.row_number AS VARCHAR)), 1, 16)"


def cohort_rows_sql(spec: CohortSpec, source_table: str | None = None) -> str:
    """SQL of every row of the cohort's source as it feeds the cohort, before exclusions: the base (and
    cohort) SQL's columns, ``patient_key`` (a per-row key for a ``row`` split) and the sensitive
    attributes, their groups as the source contract defines them. Reads ``staging.<source>`` only
    (or ``source_table``, rows of that table's shape, e.g. a replay's recorded extracts)."""
    source = contract.load_source(spec.source)
    sensitive = ", ".join(f"{derive.sensitive_attribute_sql(source.contract, a)} AS {a}"
                          for a in dict.fromkeys(spec.sensitive_attributes))
    patient_key = "" if spec.split_strategy == "patient_hash" else f"{_row_patient_key()} AS patient_key, "
    return (f"WITH source_rows AS (SELECT * FROM {source_table or tables.staging_table(spec.source)}) "
            f"SELECT b.*, {patient_key}{sensitive} FROM ({encounter_base_sql(spec)}) b "
            "JOIN source_rows s USING (extract_id, row_number)")


_BASE_TABLE = "temp.cohort_rows_for_features"


def build_features(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> FeatureBuild:
    """Create ``features.<cohort>`` from its source's rows only: keys, sensitive attributes, features
    and the 0/1 label."""
    columns = ", ".join(
        ["encounter_id", "patient_key", "extract_id", *dict.fromkeys(spec.sensitive_attributes), *spec.features]
    )
    excluded_any = spec.excluded_sql
    tables.ensure_source_tables(con, contract.load_source(spec.source))
    with transaction(con):
        # the cohort SQL (windows over each patient's whole history) runs once, into a temporary table that the
        # counts and the feature table read (DuckDB spills it to its temp directory beyond the memory cap)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_BASE_TABLE} AS {cohort_rows_sql(spec)}")
        counted = ["count(*)", *(f"count(*) FILTER (WHERE {e.sql})" for e in spec.exclusions)]
        rows_in, *per_exclusion = con.execute(f"SELECT {', '.join(counted)} FROM {_BASE_TABLE}").fetchone()
        rows_in = int(rows_in)
        excluded = {e.name: int(n) for e, n in zip(spec.exclusions, per_exclusion, strict=True)}
        con.execute(
            f"""CREATE OR REPLACE TABLE {spec.features_table} AS
            SELECT {columns}, CAST(({spec.target_sql}) AS INTEGER) AS label
            FROM {_BASE_TABLE}
            WHERE NOT ({excluded_any})
            ORDER BY encounter_id"""
        )
        con.execute(f"DROP TABLE {_BASE_TABLE}")
    rows_out, positives = con.execute(f"SELECT count(*), coalesce(sum(label), 0) FROM {spec.features_table}").fetchone()
    return FeatureBuild(rows_in=rows_in, rows_excluded=excluded, rows_out=int(rows_out), positives=int(positives))


def feature_schema(spec: CohortSpec) -> pa.DataFrameSchema:
    """Pandera schema of a cohort's feature table (:func:`~clinical_mlops.features.columns.feature_columns`):
    no missing values, ranges, a 0/1 label."""
    import pandera.pandas as pa

    def check(declared: FeatureCheck) -> pa.Check:
        value = list(declared.value) if declared.kind == "isin" else declared.value
        return getattr(pa.Check, declared.kind)(value, name=declared.name)

    columns = {
        c.name: pa.Column(_COLUMN_TYPES[c.dtype], [check(k) for k in c.checks] or None, unique=c.unique, coerce=c.coerce)
        for c in feature_columns(spec)
    }
    return pa.DataFrameSchema(columns, strict=True, name=f"{spec.name}_features")


def load_features(con: duckdb.DuckDBPyConnection, spec: CohortSpec, where: str = "TRUE") -> pd.DataFrame:
    """The whole feature table as one frame: for small cohorts and tests; see :func:`check_feature_schema`."""
    return con.execute(f"SELECT * FROM {spec.features_table} WHERE {where} ORDER BY encounter_id").df()


@dataclass(frozen=True)
class FeatureSchemaCheck:
    """Failing cases per "column:check" over the whole feature table, and the rows checked."""

    failures: dict[str, int]
    rows_checked: int


def _schema_failure_counts(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> dict[str, int]:
    import pandera.pandas as pa

    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        counted = errors.failure_cases.groupby(["column", "check"]).size()
        return {f"{column}:{check}": int(n) for (column, check), n in counted.items()}
    return {}


FEATURE_CHECK_ENGINES = ("sql", "pandera")


def _sql_literal(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"no SQL literal for {type(value).__name__}")
    return repr(value)


def _check_sql(column: str, check: pa.Check) -> str:
    """SQL for one of Pandera's built-in checks, read from the check itself (its error and statistics)."""
    kind = (check.error or "").split("(")[0]
    quoted = f'"{column}"'
    stats = check.statistics
    if kind == "greater_than_or_equal_to":
        return f"{quoted} >= {_sql_literal(stats['min_value'])}"
    if kind == "isin":
        return f"{quoted} IN ({', '.join(_sql_literal(v) for v in stats['allowed_values'])})"
    if kind == "str_matches":  # re.match: anchored at the start only
        pattern = stats["pattern"]
        return f"regexp_matches({quoted}, {_sql_literal(pattern if pattern.startswith('^') else '^' + pattern)})"
    raise NotImplementedError(f"no SQL rendering of the check {check.error!r} on {column}")


def feature_schema_sql(schema: pa.DataFrameSchema) -> str:
    """SQL true for a row that passes every per-row check of ``schema`` (compiled from the schema)."""
    parts = []
    for name, column in schema.columns.items():
        if not column.nullable:
            parts.append(f'"{name}" IS NOT NULL')
        parts.extend(f"coalesce({_check_sql(name, check)}, TRUE)" for check in column.checks)
    return " AND ".join(parts) or "TRUE"


def check_feature_schema(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
    engine: str = "sql", sample_rows: int = 50_000,
) -> FeatureSchemaCheck:
    """Validate ``features.<cohort>`` against :func:`feature_schema` with bounded memory.

    ``pandera``: every row through Pandera, ``chunk_rows`` at a time. ``sql`` (default, for
    tens of millions of rows): the schema's per-row checks, compiled to SQL from the schema
    itself, select the failing rows, which Pandera then validates (so failures are counted
    and named by Pandera); Pandera also validates a spread sample of ``sample_rows`` other
    rows, which catches anything SQL cannot see (dtypes, coercion). The one cross-row check,
    ``encounter_id`` unique, runs in SQL under Pandera's name (``encounter_id:field_uniqueness``,
    one case per row holding a repeated id). On the failing rows both engines count alike.
    """
    if engine not in FEATURE_CHECK_ENGINES:
        raise ValueError(f"engine must be one of {FEATURE_CHECK_ENGINES}, got {engine!r}")
    schema = feature_schema(spec)
    unique = [name for name, column in schema.columns.items() if column.unique]
    row_schema = schema.update_columns({name: {"unique": False} for name in unique}) if unique else schema
    table = spec.features_table
    total = int(scalar(con, f"SELECT count(*) FROM {table}"))
    failures: Counter[str] = Counter()
    if engine == "pandera":
        queries = [f"SELECT * FROM {table}"]
    else:
        passes = f"coalesce({feature_schema_sql(row_schema)}, FALSE)"
        stride = max(1, total // max(1, sample_rows))
        queries = [
            f"SELECT * FROM {table} WHERE NOT {passes}",
            f"SELECT * FROM {table} WHERE hash(encounter_id) % {stride} = 0 AND {passes}",
        ]
    for sql in queries:
        for frame in iter_frames(con, sql, chunk_rows=chunk_rows):
            failures.update(_schema_failure_counts(frame, row_schema))
    for name in unique:
        repeated = int(scalar(
            con,
            f"""SELECT coalesce(sum(n), 0) FROM (
                SELECT count(*) AS n FROM {table} GROUP BY "{name}" HAVING count(*) > 1)""",
        ))
        if repeated:
            failures[f"{name}:field_uniqueness"] += repeated
    return FeatureSchemaCheck(failures=dict(sorted(failures.items())), rows_checked=total)


@dataclass(frozen=True)
class SplitSummary:
    train_rows: int
    test_rows: int
    train_patients: int
    test_patients: int
    patient_overlap: int
    train_ids_sha256: str
    test_ids_sha256: str
    test_prevalence: float


def external_extracts(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> list[str]:
    """Landed extracts the source contract declares ``role: external_site`` (by file name or sha256):
    another site's data, for external evaluation and a transport check, never for training."""
    declared = [e for e in contract.load_source(spec.source).contract.extracts if e.role == "external_site"]
    if not declared:
        return []
    names = [e.file for e in declared]
    hashes = [e.sha256 for e in declared if e.sha256]
    return [r[0] for r in con.execute(
        "SELECT extract_id FROM raw.extracts WHERE source = ? AND status = 'landed' "
        "AND (list_contains(?, file_name) OR list_contains(?, sha256)) ORDER BY extract_id",
        [spec.source, names, hashes]).fetchall()]


def assign_split(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> SplitSummary:
    """Deterministic split by a seeded hash of the patient key (of the row, for a ``row`` split); rows of
    an external-site extract are in neither side."""
    buckets = 10_000
    cut = int(round(spec.test_fraction * buckets))
    external = external_extracts(con, spec)
    with transaction(con):
        con.execute("DELETE FROM ml.splits WHERE cohort = ?", [spec.name])
        con.execute(
            f"""INSERT INTO ml.splits
            SELECT ?, encounter_id, patient_key,
                   CASE WHEN md5_number(? || ':' || patient_key) % {buckets} < {cut} THEN 'test' ELSE 'train' END
            FROM {spec.features_table} WHERE NOT list_contains(?, extract_id)""",
            [spec.name, str(spec.split_seed), external],
        )
    return summarise_split(con, spec)


def _id_set_hash(con: duckdb.DuckDBPyConnection, cohort: str, split: str, batch_rows: int = 100_000) -> str:
    """sha256 over the sorted distinct patient keys of one side, streamed in batches."""
    digest = hashlib.sha256()
    cursor = con.execute(
        "SELECT DISTINCT patient_key FROM ml.splits WHERE cohort = ? AND split = ? ORDER BY 1", [cohort, split]
    )
    while batch := cursor.fetchmany(batch_rows):
        digest.update(b"".join(key.encode() + b"\n" for (key,) in batch))
    return digest.hexdigest()


def summarise_split(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> SplitSummary:
    counts = dict(
        (split, (int(rows), int(patients)))
        for split, rows, patients in con.execute(
            "SELECT split, count(*), count(DISTINCT patient_key) FROM ml.splits WHERE cohort = ? GROUP BY split",
            [spec.name],
        ).fetchall()
    )
    overlap = int(
        scalar(
            con,
            """SELECT count(*) FROM (
                SELECT patient_key FROM ml.splits WHERE cohort = ? GROUP BY patient_key HAVING count(DISTINCT split) > 1
            )""",
            [spec.name],
        )
    )
    prevalence = scalar(
        con,
        f"""SELECT avg(f.label) FROM {spec.features_table} f
            JOIN ml.splits s ON s.cohort = ? AND s.encounter_id = f.encounter_id WHERE s.split = 'test'""",
        [spec.name],
    )
    return SplitSummary(
        train_rows=counts.get("train", (0, 0))[0],
        test_rows=counts.get("test", (0, 0))[0],
        train_patients=counts.get("train", (0, 0))[1],
        test_patients=counts.get("test", (0, 0))[1],
        patient_overlap=overlap,
        train_ids_sha256=_id_set_hash(con, spec.name, "train"),
        test_ids_sha256=_id_set_hash(con, spec.name, "test"),
        test_prevalence=float(prevalence) if prevalence is not None else float("nan"),
    )


def _split_sql(spec: CohortSpec) -> str:
    return f"""SELECT f.* FROM {spec.features_table} f
            JOIN ml.splits s ON s.cohort = ? AND s.encounter_id = f.encounter_id
            WHERE s.split = ? ORDER BY f.encounter_id"""


def load_split_frame(con: duckdb.DuckDBPyConnection, spec: CohortSpec, split: str) -> pd.DataFrame:
    """One side of the split with features, label and sensitive attributes, in encounter order.

    The whole side in memory: at scale use :func:`iter_split_frames` or :func:`load_training_sample`.
    """
    return con.execute(_split_sql(spec), [spec.name, split]).df()


def iter_split_frames(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, split: str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """One side of the split as frames of about ``chunk_rows`` rows, in encounter order."""
    yield from iter_frames(con, _split_sql(spec), [spec.name, split], chunk_rows=chunk_rows)


@dataclass(frozen=True)
class TrainingSample:
    """The rows a model is fitted on: all of the training side, or a patient-grouped subsample."""

    frame: pd.DataFrame
    full_rows: int
    full_patients: int
    used_rows: int
    used_patients: int
    max_rows: int
    seed: int

    @property
    def subsampled(self) -> bool:
        return self.used_rows < self.full_rows


def load_training_sample(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, max_rows: int, seed: int
) -> TrainingSample:
    """The training side, or above ``max_rows`` rows a seeded patient-grouped subsample of it.

    Drawn in SQL: patients are ordered by a seeded hash of their pseudonymised key and taken
    whole while the running row count stays within ``max_rows``, so every kept patient keeps
    all their encounters, the draw is deterministic for a given seed and split, and only the
    kept rows reach pandas.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be >= 1")
    full_rows, full_patients = con.execute(
        "SELECT count(*), count(DISTINCT patient_key) FROM ml.splits WHERE cohort = ? AND split = 'train'",
        [spec.name],
    ).fetchone()
    if full_rows <= max_rows:
        frame = load_split_frame(con, spec, "train")
    else:
        frame = con.execute(
            f"""WITH patients AS (
                    SELECT patient_key, count(*) AS n,
                           md5_number(? || ':' || patient_key) AS draw
                    FROM ml.splits WHERE cohort = ? AND split = 'train' GROUP BY patient_key
                ), kept AS (
                    SELECT patient_key FROM (
                        SELECT patient_key, sum(n) OVER (ORDER BY draw, patient_key
                                                        ROWS UNBOUNDED PRECEDING) AS running
                        FROM patients
                    ) WHERE running <= ?
                )
                SELECT f.* FROM {spec.features_table} f
                JOIN ml.splits s ON s.cohort = ? AND s.encounter_id = f.encounter_id AND s.split = 'train'
                WHERE s.patient_key IN (SELECT patient_key FROM kept)
                ORDER BY f.encounter_id""",
            [str(seed), spec.name, max_rows, spec.name],
        ).df()
    return TrainingSample(
        frame=frame, full_rows=int(full_rows), full_patients=int(full_patients), used_rows=len(frame),
        used_patients=int(frame["patient_key"].nunique()) if len(frame) else 0, max_rows=int(max_rows),
        seed=int(seed),
    )

"""Cohort feature tables built in DuckDB SQL, their Pandera schema, and the patient split.

The heavy lifting stays in the warehouse: features are one ``CREATE TABLE AS`` over the
validated encounters; only the model-fitting step pulls a cohort's feature table into memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pandera.pandas as pa

from clinical_mlops import diabetes130
from clinical_mlops.cohort import CohortSpec
from clinical_mlops.warehouse import scalar, transaction

SQL_DIR = Path(__file__).parent / "sql"


def encounter_base_sql() -> str:
    """The shared feature SQL with the medication summaries expanded."""
    meds = diabetes130.MEDICATIONS

    def count_where(condition: str) -> str:
        return " + ".join(f"CAST(e.\"{m}\" {condition} AS INTEGER)" for m in meds)

    return (SQL_DIR / "encounter_base.sql").read_text().format(
        medications_prescribed=count_where("<> 'No'"),
        medications_up=count_where("= 'Up'"),
        medications_down=count_where("= 'Down'"),
    )


def feature_sql_version(spec: CohortSpec) -> str:
    """A hash of everything that defines the feature table: shared SQL and the cohort spec."""
    return hashlib.sha256((encounter_base_sql() + spec.spec_hash).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class FeatureBuild:
    rows_in: int
    rows_excluded: dict[str, int]
    rows_out: int
    positives: int

    @property
    def prevalence(self) -> float:
        return self.positives / self.rows_out if self.rows_out else float("nan")


def build_features(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> FeatureBuild:
    """Create ``features.<cohort>``: keys, sensitive attributes, features and the 0/1 label."""
    base = encounter_base_sql()
    columns = ", ".join(
        ["encounter_id", "patient_key", "extract_id", *dict.fromkeys(spec.sensitive_attributes), *spec.features]
    )
    excluded_any = " OR ".join(f"({e.sql})" for e in spec.exclusions) or "FALSE"
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TEMP VIEW encounter_base AS {base}")
        rows_in = int(scalar(con, "SELECT count(*) FROM encounter_base"))
        excluded = {
            e.name: int(scalar(con, f"SELECT count(*) FROM encounter_base WHERE {e.sql}")) for e in spec.exclusions
        }
        con.execute(
            f"""CREATE OR REPLACE TABLE {spec.features_table} AS
            SELECT {columns}, CAST(({spec.target_sql}) AS INTEGER) AS label
            FROM encounter_base
            WHERE NOT ({excluded_any})
            ORDER BY encounter_id"""
        )
    rows_out, positives = con.execute(f"SELECT count(*), coalesce(sum(label), 0) FROM {spec.features_table}").fetchone()
    return FeatureBuild(rows_in=rows_in, rows_excluded=excluded, rows_out=int(rows_out), positives=int(positives))


def feature_schema(spec: CohortSpec) -> pa.DataFrameSchema:
    """Pandera schema of a cohort's feature table: no missing values, ranges, a 0/1 label."""
    columns: dict[str, pa.Column] = {
        "encounter_id": pa.Column(int, unique=True, coerce=True),
        "patient_key": pa.Column(str, pa.Check.str_matches(r"^[0-9a-f]{16}$", name="pseudonymised")),
        "extract_id": pa.Column(str),
        "label": pa.Column(int, pa.Check.isin([0, 1], name="binary_label"), coerce=True),
    }
    for attribute in spec.sensitive_attributes:
        columns[attribute] = pa.Column(str)
    for feature in spec.numeric_features:
        columns[feature] = pa.Column(float, pa.Check.ge(0, name="non_negative"), coerce=True)
    for feature in spec.categorical_features:
        columns[feature] = pa.Column(str)
    return pa.DataFrameSchema(columns, strict=True, name=f"{spec.name}_features")


def load_features(con: duckdb.DuckDBPyConnection, spec: CohortSpec, where: str = "TRUE") -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {spec.features_table} WHERE {where} ORDER BY encounter_id").df()


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


def assign_split(con: duckdb.DuckDBPyConnection, spec: CohortSpec) -> SplitSummary:
    """Deterministic patient-grouped split: a patient's side follows a seeded hash of its key."""
    buckets = 10_000
    cut = int(round(spec.test_fraction * buckets))
    with transaction(con):
        con.execute("DELETE FROM ml.splits WHERE cohort = ?", [spec.name])
        con.execute(
            f"""INSERT INTO ml.splits
            SELECT ?, encounter_id, patient_key,
                   CASE WHEN md5_number(? || ':' || patient_key) % {buckets} < {cut} THEN 'test' ELSE 'train' END
            FROM {spec.features_table}""",
            [spec.name, str(spec.split_seed)],
        )
    return summarise_split(con, spec)


def _id_set_hash(con: duckdb.DuckDBPyConnection, cohort: str, split: str) -> str:
    digest = hashlib.sha256()
    for (key,) in con.execute(
        "SELECT DISTINCT patient_key FROM ml.splits WHERE cohort = ? AND split = ? ORDER BY 1", [cohort, split]
    ).fetchall():
        digest.update(key.encode() + b"\n")
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


def load_split_frame(con: duckdb.DuckDBPyConnection, spec: CohortSpec, split: str) -> pd.DataFrame:
    """One side of the split with features, label and sensitive attributes, in encounter order."""
    return con.execute(
        f"""SELECT f.* FROM {spec.features_table} f
            JOIN ml.splits s ON s.cohort = ? AND s.encounter_id = f.encounter_id
            WHERE s.split = ? ORDER BY f.encounter_id""",
        [spec.name, split],
    ).df()

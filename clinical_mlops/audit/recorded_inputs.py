"""A version's recorded train/test rows, rebuilt from only the extracts it was trained on.

The feature SQL is run over the validated rows of the recorded extracts in temporary DuckDB
tables (so a read-only connection is enough and later extracts do not leak in), and the seeded
patient split is re-assigned the way ``training_split`` assigns it. The replay compares the
rebuilt rows with the record; the model card counts their composition.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import duckdb
import pandas as pd

from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.sources import tables

__all__ = ["SPLIT_BUCKETS", "RecordedInputs", "id_set_hash", "rebuild_recorded_inputs"]

SPLIT_BUCKETS = 10_000
"""Must match ``features.assign_split`` (a patient's side = seeded hash bucket < cut)."""


@dataclass
class RecordedInputs:
    """The recorded train/test rows, rebuilt; frames hold patient data and never leave the process."""

    train: pd.DataFrame
    test: pd.DataFrame
    train_ids_sha256: str
    test_ids_sha256: str
    source: str
    """``staging`` (rebuilt from validated rows of the recorded extracts) or ``features`` (fallback)."""


def id_set_hash(keys: pd.Series) -> str:
    """sha256 over the sorted distinct ids, one per line: the id-set hash recorded at training."""
    digest = hashlib.sha256()
    for key in sorted(set(keys.astype(str))):
        digest.update(key.encode() + b"\n")
    return digest.hexdigest()


def rebuild_recorded_inputs(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, extract_ids: list[str]
) -> RecordedInputs:
    """Feature rows of the recorded extracts only, split as ``training_split`` splits them."""
    suffix = uuid.uuid4().hex[:8]
    staging_view, features_table = f"replay_staging_{suffix}", f"replay_features_{suffix}"
    source = "staging"
    placeholders = ", ".join("?" for _ in extract_ids) or "NULL"
    columns = ", ".join(
        ["encounter_id", "patient_key", "extract_id", *dict.fromkeys(spec.sensitive_attributes), *spec.features]
    )
    excluded_any = spec.excluded_sql
    try:
        con.execute(
            f"CREATE TEMP TABLE {staging_view} AS SELECT * FROM {tables.staging_table(spec.source)} "
            f"WHERE extract_id IN ({placeholders})",
            list(extract_ids),
        )
        con.execute(
            f"""CREATE TEMP TABLE {features_table} AS
            SELECT {columns}, CAST(({spec.target_sql}) AS INTEGER) AS label
            FROM ({features.cohort_rows_sql(spec, staging_view)})
            WHERE NOT ({excluded_any})"""
        )
        cut = int(round(spec.test_fraction * SPLIT_BUCKETS))
        frame = con.execute(
            f"""SELECT f.*, CASE WHEN md5_number(? || ':' || f.patient_key) % {SPLIT_BUCKETS} < {cut}
                                THEN 'test' ELSE 'train' END AS _split
                FROM {features_table} f ORDER BY f.encounter_id""",
            [str(spec.split_seed)],
        ).df()
    finally:
        con.execute(f"DROP TABLE IF EXISTS {features_table}")
        con.execute(f"DROP TABLE IF EXISTS {staging_view}")
    train = frame[frame["_split"] == "train"].drop(columns="_split").reset_index(drop=True)
    test = frame[frame["_split"] == "test"].drop(columns="_split").reset_index(drop=True)
    return RecordedInputs(
        train=train,
        test=test,
        train_ids_sha256=id_set_hash(train["patient_key"]),
        test_ids_sha256=id_set_hash(test["patient_key"]),
        source=source,
    )

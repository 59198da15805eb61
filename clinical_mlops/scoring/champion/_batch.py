"""Batch scoring of one extract: the cohort's features streamed in chunks, scored and written to
``ml.batch_predictions`` in one transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.core.warehouse import transaction
from clinical_mlops.scoring.champion._inputs import input_hashes, utc_now
from clinical_mlops.scoring.champion._resolve import ModelRef, ScoringModel

__all__ = [
    "BATCH_PREDICTIONS_DDL", "CHUNK_ROWS", "BatchScoringSummary", "ensure_tables", "extract_feature_chunks",
    "extract_feature_frame", "prediction_rows", "score_extract", "write_batch_predictions",
]

CHUNK_ROWS = 100_000
"""Encounters fetched, scored and inserted at a time by batch scoring."""

BATCH_PREDICTIONS_DDL = """CREATE TABLE IF NOT EXISTS ml.batch_predictions (
    cohort VARCHAR NOT NULL,
    extract_id VARCHAR NOT NULL,
    encounter_id BIGINT NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    model_source VARCHAR NOT NULL,          -- champion_alias (rows written before issue 13 may say
                                            -- latest_candidate_fallback: that fallback is gone)
    mlflow_run_id VARCHAR NOT NULL,
    model_card_sha256 VARCHAR,              -- null until a model card has been recorded
    input_sha256 VARCHAR NOT NULL,          -- sha256 of the canonical feature JSON of the row
    score DOUBLE NOT NULL,
    operating_threshold DOUBLE,
    flagged BOOLEAN,
    predicted_at TIMESTAMP NOT NULL,        -- UTC
    dagster_run_id VARCHAR
)"""


def prediction_rows(
    frame: pd.DataFrame,
    scores: np.ndarray,
    ref: ModelRef,
    spec: CohortSpec,
    *,
    extract_id: str,
    predicted_at: datetime,
    dagster_run_id: str | None = None,
) -> pd.DataFrame:
    """One ``ml.batch_predictions`` row per scored encounter."""
    flagged = (
        pd.array(np.asarray(scores) >= ref.operating_threshold, dtype="boolean")
        if ref.operating_threshold is not None
        else pd.array([None] * len(frame), dtype="boolean")
    )
    return pd.DataFrame(
        {
            "cohort": spec.name,
            "extract_id": extract_id,
            "encounter_id": frame["encounter_id"].astype("int64").to_numpy(),
            "model_name": ref.name,
            "model_version": ref.version,
            "model_source": ref.source,
            "mlflow_run_id": ref.run_id,
            "model_card_sha256": pd.array([ref.model_card_sha256] * len(frame), dtype="object"),
            "input_sha256": input_hashes(frame, spec),
            "score": np.asarray(scores, dtype="float64"),
            "operating_threshold": np.full(len(frame), np.nan if ref.operating_threshold is None else ref.operating_threshold),
            "flagged": flagged,
            "predicted_at": predicted_at,
            "dagster_run_id": dagster_run_id,
        }
    )


def _extract_features_sql(spec: CohortSpec) -> str:
    """The cohort's features for one extract's encounters (one parameter: the extract id), in encounter order."""
    excluded_any = spec.excluded_sql
    columns = ", ".join(["encounter_id", "extract_id", *(f'"{c}"' for c in spec.features)])
    return (f"WITH encounter_base AS ({features.cohort_rows_sql(spec)}) "
            f"SELECT {columns} FROM encounter_base WHERE extract_id = ? AND NOT ({excluded_any}) ORDER BY encounter_id")


def _extract_rows_sql(spec: CohortSpec) -> str:
    """Every encounter of one extract with its features and two flags: ``_scored`` (in the cohort: what
    :func:`_extract_features_sql` selects) and ``_excluded`` (removed by an exclusion). One pass of the cohort
    SQL (windows over each patient's whole history) serves both."""
    excluded_any = spec.excluded_sql
    columns = ", ".join(["encounter_id", "extract_id", *(f'"{c}"' for c in spec.features)])
    return (f"WITH encounter_base AS ({features.cohort_rows_sql(spec)}) "
            f"SELECT {columns}, coalesce(NOT ({excluded_any}), FALSE) AS _scored, "
            f"coalesce(({excluded_any}), FALSE) AS _excluded "
            "FROM encounter_base WHERE extract_id = ? ORDER BY encounter_id")


def extract_feature_frame(con: duckdb.DuckDBPyConnection, spec: CohortSpec, extract_id: str) -> pd.DataFrame:
    """The cohort's features for the encounters of one validated extract (exclusions applied).

    Same SQL as ``features.build_features``, so the model sees exactly what training saw.
    """
    return con.execute(_extract_features_sql(spec), [extract_id]).df()


def extract_feature_chunks(con: duckdb.DuckDBPyConnection, spec: CohortSpec, extract_id: str,
                           chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """``extract_feature_frame`` in chunks of at most ``chunk_rows`` rows, streamed from DuckDB."""
    yield from _chunks(con, _extract_features_sql(spec), extract_id, chunk_rows)


def _chunks(con: duckdb.DuckDBPyConnection, sql: str, extract_id: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of ``sql`` (one parameter: the extract id), at most ``chunk_rows`` at a time, streamed."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    cursor = con.execute(sql, [extract_id])
    vectors = max(1, chunk_rows // 2048)  # DuckDB vectors hold 2,048 rows
    while True:
        chunk = cursor.fetch_df_chunk(vectors)
        if chunk.empty:
            return
        for start in range(0, len(chunk), chunk_rows):
            yield chunk.iloc[start:start + chunk_rows].reset_index(drop=True)


@dataclass(frozen=True)
class BatchScoringSummary:
    """Aggregates of one extract's batch scoring (counts and hashes, never rows)."""

    cohort: str
    extract_id: str
    model: ModelRef
    rows_scored: int
    rows_excluded: int
    rows_flagged: int | None
    mean_score: float
    scores_sha256: str
    predicted_at: datetime

    @property
    def alerts_per_100(self) -> float | None:
        if self.rows_flagged is None or not self.rows_scored:
            return None
        return 100.0 * self.rows_flagged / self.rows_scored


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(BATCH_PREDICTIONS_DDL)


_INSERT_ROWS = """INSERT INTO ml.batch_predictions
    SELECT cohort, extract_id, encounter_id, model_name, model_version, model_source, mlflow_run_id,
           model_card_sha256, input_sha256, score,
           CASE WHEN isnan(operating_threshold) THEN NULL ELSE operating_threshold END,
           flagged, predicted_at, dagster_run_id
    FROM batch_prediction_rows"""


def _insert_rows(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
    con.register("batch_prediction_rows", rows)
    try:
        con.execute(_INSERT_ROWS)
    finally:
        con.unregister("batch_prediction_rows")


def write_batch_predictions(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame, *, cohort: str, extract_id: str) -> None:
    """Replace the extract's predictions for the cohort (re-scoring a partition is idempotent)."""
    ensure_tables(con)
    with transaction(con):
        con.execute("DELETE FROM ml.batch_predictions WHERE cohort = ? AND extract_id = ?", [cohort, extract_id])
        _insert_rows(con, rows)


def score_extract(
    con: duckdb.DuckDBPyConnection,
    model: ScoringModel,
    extract_id: str,
    *,
    dagster_run_id: str | None = None,
    now: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> BatchScoringSummary:
    """Score every in-cohort encounter of one validated extract and store the rows.

    Chunks of ``chunk_rows`` encounters are read on a second cursor, scored and inserted in one
    transaction that first deletes the extract's earlier rows: all or nothing, and idempotent.
    """
    spec = model.spec
    ensure_tables(con)
    predicted_at = now or utc_now()
    digest = hashlib.sha256()
    scores_seen: list[np.ndarray] = []
    flagged_count = excluded = 0
    reader = con.cursor()  # reads while ``con`` writes: its own transaction, the same database
    try:
        with transaction(con):
            con.execute("DELETE FROM ml.batch_predictions WHERE cohort = ? AND extract_id = ?", [spec.name, extract_id])
            for rows_read in _chunks(reader, _extract_rows_sql(spec), extract_id, chunk_rows):
                excluded += int(rows_read["_excluded"].sum())
                frame = rows_read[rows_read["_scored"]].drop(columns=["_scored", "_excluded"]).reset_index(drop=True)
                if frame.empty:
                    continue
                scores = model.score(frame)
                rows = prediction_rows(frame, scores, model.ref, spec, extract_id=extract_id,
                                       predicted_at=predicted_at, dagster_run_id=dagster_run_id)
                _insert_rows(con, rows)
                for encounter_id, input_hash, score in zip(rows["encounter_id"], rows["input_sha256"], rows["score"]):
                    digest.update(f"{encounter_id}:{input_hash}:{score:.17g}\n".encode())
                flagged = model.flag(scores)
                flagged_count += 0 if flagged is None else int(flagged.sum())
                scores_seen.append(np.asarray(scores, dtype=np.float64))
            if not scores_seen:
                raise ValueError(f"extract {extract_id} has no validated in-cohort encounters for {spec.name}")
    finally:
        reader.close()
    all_scores = np.concatenate(scores_seen)
    return BatchScoringSummary(
        cohort=spec.name,
        extract_id=extract_id,
        model=model.ref,
        rows_scored=int(all_scores.shape[0]),
        rows_excluded=excluded,
        rows_flagged=None if model.ref.operating_threshold is None else flagged_count,
        mean_score=float(np.mean(all_scores)),
        scores_sha256=digest.hexdigest(),
        predicted_at=predicted_at,
    )

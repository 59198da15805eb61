"""Scoring with the current champion: resolve it in the registry, score frames, build prediction rows.

The champion is the version that carries the MLflow alias ``champion`` on ``<cohort>_candidate``
or on ``<cohort>_mitigated`` (moved only by the promotion gate or an approver's
``clinical-mlops promote``). There is no fallback: with no champion — or with the alias on both
names at once — nothing scores, and the refusal names the cohort and the command that promotes
(:class:`NoModelError`). Every prediction records ``model_source`` = ``champion_alias``.

Every prediction carries what a reader needs to trust it (GMLP principle 9): the registered
model and version, the model card's sha256 (MLflow model-version tag ``model_card_sha256``,
null until the audit work has written a card), the sha256 of its canonical input, the
operating threshold and a UTC timestamp. The alias is resolved to a concrete version once and
that exact version is loaded, so the version recorded is always the version that scored.

Batch scoring (``score_extract``) computes an extract's features with the same SQL as training
(the cohort's SQL over its source's rows, cohort exclusions applied) and writes
``ml.batch_predictions``. It streams: ``chunk_rows`` encounters at a time are fetched, scored and
inserted (one transaction for the extract), so memory does not grow with the extract. No patient
data leaves the warehouse: summaries hold counts and hashes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.features import build as features
from clinical_mlops.training import modelling
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.core.reporting import canonical_json
from clinical_mlops.core.warehouse import transaction
from clinical_mlops.scoring.names import CHAMPION_ROLES, champion_model_names

__all__ = [
    "BATCH_PREDICTIONS_DDL", "CARD_TAG", "CHAMPION_ALIAS", "CHAMPION_ROLES", "CHUNK_ROWS", "SOURCE_ALIAS",
    "AmbiguousChampionError", "BatchScoringSummary", "ModelRef", "NoModelError", "ScoringModel",
    "canonical_features", "champion_model_names", "ensure_tables", "extract_feature_chunks",
    "extract_feature_frame", "input_hashes", "input_sha256", "load_scoring_model", "no_champion_reason",
    "prediction_rows", "registered_card_sha256", "resolve_champion", "score_extract",
    "utc_now", "write_batch_predictions",
]

CHAMPION_ALIAS = "champion"
CHUNK_ROWS = 100_000
"""Encounters fetched, scored and inserted at a time by batch scoring."""
CARD_TAG = "model_card_sha256"
SOURCE_ALIAS = "champion_alias"

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


class NoModelError(LookupError):
    """The cohort has no champion: nothing may score (the message says how to promote one)."""


class AmbiguousChampionError(NoModelError):
    """The ``champion`` alias is on more than one of the cohort's registered models: refused, not guessed."""


def no_champion_reason(cohort: str) -> str:
    """The one line batch scoring fails with and the service answers 503 with, when there is no champion."""
    return (
        f"no champion for {cohort}: no model has passed the promotion gate; run the release "
        f"(clinical-mlops demo, or materialize {cohort}/promotion) or approve one with clinical-mlops promote "
        f"--model {modelling.registered_model_name(cohort, 'candidate')} --version N --approver NAME --reason TEXT"
    )


@dataclass(frozen=True)
class ModelRef:
    """A concrete registered model version chosen to score, and why it was chosen."""

    name: str
    version: str
    run_id: str
    source: str
    model_card_sha256: str | None
    operating_threshold: float | None
    note: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def as_dict(self) -> dict:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "model_source": self.source,
            "model_card_sha256": self.model_card_sha256,
            "operating_threshold": self.operating_threshold,
        }


def _threshold_of_run(client, run_id: str) -> float | None:
    try:
        value = client.get_run(run_id).data.metrics.get("operating_threshold")
    except Exception:  # noqa: BLE001 - a missing run leaves the threshold unknown, not fatal
        return None
    return None if value is None or math.isnan(value) else float(value)


_NO_ALIAS_CODES = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
"""MLflow's error codes for "this alias is not set" and "this registered model does not exist"."""


def _aliased_version(client, name: str, alias: str):
    """The version carrying ``alias`` on ``name``, or None when it carries none (other errors propagate)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) in _NO_ALIAS_CODES:
            return None
        raise


def resolve_champion(cohort: str, *, alias: str = CHAMPION_ALIAS) -> ModelRef:
    """The version carrying the ``champion`` alias on the cohort's candidate or mitigated model.

    Raises :class:`NoModelError` when neither carries it, and :class:`AmbiguousChampionError`
    when both do (a promotion clears the other name; two champions are refused, never guessed).
    Uses the tracking/registry URI MLflow is configured with (``tracking.configure``).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = [(name, version) for name in champion_model_names(cohort)
             if (version := _aliased_version(client, name, alias)) is not None]
    if not found:
        raise NoModelError(no_champion_reason(cohort))
    if len(found) > 1:
        both = " and ".join(f"{name} v{version.version}" for name, version in found)
        raise AmbiguousChampionError(
            f"two champions for {cohort}: the '{alias}' alias is on {both}; nothing scores until it is "
            f"removed from one of them"
        )
    name, version = found[0]
    tags = dict(version.tags or {})
    return ModelRef(
        name=name,
        version=str(version.version),
        run_id=str(version.run_id),
        source=SOURCE_ALIAS,
        model_card_sha256=tags.get(CARD_TAG) or None,
        operating_threshold=_threshold_of_run(client, version.run_id),
        note=f"alias '{alias}' on {name}",
    )


def registered_card_sha256(name: str, version: str) -> str | None:
    """The ``model_card_sha256`` tag the registry holds now for one version (None if not recorded)."""
    from mlflow.tracking import MlflowClient

    tags = dict(MlflowClient().get_model_version(name, str(version)).tags or {})
    return tags.get(CARD_TAG) or None


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model version with the cohort spec whose features it takes."""

    ref: ModelRef
    pipeline: object
    spec: CohortSpec
    compiled: object | None = field(default=None, compare=False, repr=False)
    """An equivalent fast scorer of request records (``score(records)``), checked identical at load time."""

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class for each row of ``frame`` (feature columns)."""
        return modelling.predict_risk(self.pipeline, frame, self.spec)

    def score_records(self, records: Sequence[Mapping[str, object]]) -> np.ndarray:
        """``score`` of canonical feature records, by the compiled scorer when there is one."""
        if self.compiled is not None:
            return self.compiled.score(records)  # type: ignore[attr-defined]
        return self.score(pd.DataFrame(list(records)))

    def flag(self, scores: np.ndarray) -> np.ndarray | None:
        if self.ref.operating_threshold is None:
            return None
        return np.asarray(scores) >= self.ref.operating_threshold


def load_scoring_model(ref: ModelRef, spec: CohortSpec) -> ScoringModel:
    """Load exactly ``ref``'s version and check it takes the cohort spec's features."""
    from clinical_mlops.core import tracking

    pipeline = tracking.load_model(ref.uri)
    expected = getattr(pipeline, "feature_names_in_", None)
    if expected is not None and set(expected) != set(spec.features):
        missing = sorted(set(spec.features) - set(expected))
        extra = sorted(set(expected) - set(spec.features))
        raise ValueError(
            f"{ref.name} v{ref.version} was trained on other features than the cohort spec "
            f"'{spec.name}' declares (spec only: {missing or 'none'}; model only: {extra or 'none'})"
        )
    return ScoringModel(ref=ref, pipeline=pipeline, spec=spec)


# ---------------------------------------------------------------------------------------------
# canonical inputs and their hashes
# ---------------------------------------------------------------------------------------------


def canonical_features(record: Mapping[str, object], spec: CohortSpec) -> dict[str, float | str]:
    """The model input of one row as plain JSON values: numerics as floats, categoricals as strings."""
    out: dict[str, float | str] = {}
    for name in spec.numeric_features:
        out[name] = float(record[name])  # type: ignore[arg-type]
    for name in spec.categorical_features:
        out[name] = str(record[name])
    return out


def input_sha256(record: Mapping[str, object], spec: CohortSpec) -> str:
    """sha256 of the canonical feature JSON: the same row hashes the same in batch and online."""
    return hashlib.sha256(canonical_json(canonical_features(record, spec)).encode()).hexdigest()


def input_hashes(frame: pd.DataFrame, spec: CohortSpec) -> list[str]:
    """``input_sha256`` of every row of ``frame``."""
    numeric = frame[list(spec.numeric_features)].astype("float64").to_dict("records") if spec.numeric_features else None
    categorical = (
        frame[list(spec.categorical_features)].astype(str).to_dict("records") if spec.categorical_features else None
    )
    out = []
    for i in range(len(frame)):
        row: dict[str, object] = {}
        if numeric is not None:
            row.update(numeric[i])
        if categorical is not None:
            row.update(categorical[i])
        out.append(hashlib.sha256(canonical_json(row).encode()).hexdigest())
    return out


def utc_now() -> datetime:
    """Naive UTC timestamp, as the warehouse stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


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


# ---------------------------------------------------------------------------------------------
# batch scoring of one extract
# ---------------------------------------------------------------------------------------------


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

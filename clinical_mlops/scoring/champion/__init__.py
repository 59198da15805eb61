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

from clinical_mlops.scoring.champion._batch import (
    BATCH_PREDICTIONS_DDL,
    CHUNK_ROWS,
    BatchScoringSummary,
    ensure_tables,
    extract_feature_chunks,
    extract_feature_frame,
    prediction_rows,
    score_extract,
    write_batch_predictions,
)
from clinical_mlops.scoring.champion._inputs import canonical_features, input_hashes, input_sha256, utc_now
from clinical_mlops.scoring.champion._resolve import (
    CARD_TAG,
    CHAMPION_ALIAS,
    SOURCE_ALIAS,
    AmbiguousChampionError,
    ModelRef,
    NoModelError,
    ScoringModel,
    load_scoring_model,
    no_champion_reason,
    registered_card_sha256,
    resolve_champion,
)
from clinical_mlops.scoring.names import CHAMPION_ROLES, champion_model_names

__all__ = [
    "BATCH_PREDICTIONS_DDL", "CARD_TAG", "CHAMPION_ALIAS", "CHAMPION_ROLES", "CHUNK_ROWS", "SOURCE_ALIAS",
    "AmbiguousChampionError", "BatchScoringSummary", "ModelRef", "NoModelError", "ScoringModel",
    "canonical_features", "champion_model_names", "ensure_tables", "extract_feature_chunks",
    "extract_feature_frame", "input_hashes", "input_sha256", "load_scoring_model", "no_champion_reason",
    "prediction_rows", "registered_card_sha256", "resolve_champion", "score_extract",
    "utc_now", "write_batch_predictions",
]

"""What the batch-scoring asset does, as a plain function (no Dagster): ``[cohort, batch_predictions]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import tracking
from clinical_mlops.core.steps import LOG, StepError, StepLog
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.scoring import champion

__all__ = ["BatchScoringStep", "score_batch"]


@dataclass(frozen=True)
class BatchScoringStep:
    model: champion.ModelRef
    summary: champion.BatchScoringSummary
    rows_missing_provenance: int
    scores_out_of_range: int

    @property
    def traceable(self) -> bool:
        """Every row names its model version, input hash and time, and every score is a probability."""
        return self.rows_missing_provenance == 0 and self.scores_out_of_range == 0


def score_batch(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, extract_id: str, *, tracking_uri: str,
    artifact_root: Path | str, run_id: str | None = None, chunk_rows: int = champion.CHUNK_ROWS,
    log: StepLog = LOG,
) -> BatchScoringStep:
    """``[cohort, batch_predictions]``: the extract's in-cohort encounters scored in chunks by the champion
    (alias ``champion``, else the latest candidate version) into ``ml.batch_predictions``, each row with
    model version, model card sha256, input sha256 and a UTC timestamp; then the rows' provenance checked."""
    tracking.configure(tracking_uri, Path(artifact_root))
    try:
        ref = champion.resolve_champion(spec.name)
    except champion.NoModelError as exc:
        raise StepError(str(exc), allow_retries=False) from None
    if ref.source != champion.SOURCE_ALIAS:
        log.warning(f"{spec.name}: {ref.note}")
    model = champion.load_scoring_model(ref, spec)
    try:
        summary = champion.score_extract(con, model, extract_id, dagster_run_id=run_id, chunk_rows=chunk_rows)
    except ValueError as exc:
        raise StepError(str(exc), allow_retries=False) from None
    bad, out_of_range = con.execute(
        """SELECT count(*) FILTER (WHERE model_version IS NULL OR input_sha256 IS NULL OR predicted_at IS NULL),
                  count(*) FILTER (WHERE score < 0 OR score > 1 OR isnan(score))
           FROM ml.batch_predictions WHERE cohort = ? AND extract_id = ?""",
        [spec.name, extract_id],
    ).fetchall()[0]
    log.info(f"{spec.name}/{extract_id}: {summary.rows_scored} encounters scored by "
             f"{ref.name} v{ref.version} ({ref.source})")
    return BatchScoringStep(ref, summary, int(bad), int(out_of_range))

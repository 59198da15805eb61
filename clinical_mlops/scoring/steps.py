"""What the batch-scoring asset does, as a plain function (no Dagster): ``[cohort, batch_predictions]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import evidence, tracking
from clinical_mlops.core.steps import LOG, StepError, StepLog
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.scoring import champion

__all__ = ["BatchScoringStep", "Provenance", "check_provenance", "score_batch"]

SHA256_HEX = 64


@dataclass(frozen=True)
class Provenance:
    """What ``predictions_traceable`` verifies over one extract's rows (counts only, never rows)."""

    rows: int
    card_missing: int
    """Rows with no model card sha256."""
    card_mismatch: int
    """Rows whose card sha256 differs from the registered version's ``model_card_sha256`` tag."""
    not_champion_alias: int
    """Rows whose ``model_source`` is not ``champion_alias``."""
    not_the_champion: int
    """Rows naming another model, version or MLflow run than the champion resolved at scoring time."""
    bad_input_hash: int
    """Rows whose input sha256 is not 64 hex characters."""
    scores_out_of_range: int
    registered_card_sha256: str | None

    def evidence(self) -> evidence.Evidence:
        if self.rows == 0:
            return evidence.Evidence(evidence.INSUFFICIENT, "no prediction rows for the extract to verify")
        problems = [
            (self.card_missing, "have no model card sha256"),
            (self.card_mismatch, "carry a model card sha256 other than the registered version's"
             + ("" if self.registered_card_sha256 else " (the registered version has no model_card_sha256 tag)")),
            (self.not_champion_alias, "were not scored by the champion alias"),
            (self.not_the_champion, "name another model version than the champion at scoring time"),
            (self.bad_input_hash, f"have an input sha256 that is not {SHA256_HEX} hex characters"),
            (self.scores_out_of_range, "have a score outside [0, 1]"),
        ]
        found = [f"{count} of {self.rows} rows {what}" for count, what in problems if count]
        if found:
            return evidence.Evidence(evidence.FAIL, "; ".join(found))
        return evidence.Evidence(evidence.PASS, f"all {self.rows} rows carry the champion's version, its registered "
                                 "model card sha256, the champion_alias source and an input sha256")

    def as_metadata(self) -> dict:
        return {
            "rows_checked": self.rows, "card_missing": self.card_missing, "card_mismatch": self.card_mismatch,
            "not_champion_alias": self.not_champion_alias, "not_the_champion": self.not_the_champion,
            "bad_input_hash": self.bad_input_hash, "scores_out_of_range": self.scores_out_of_range,
            "registered_card_sha256": self.registered_card_sha256 or "not recorded",
        }


def check_provenance(con: duckdb.DuckDBPyConnection, cohort: str, extract_id: str, ref: champion.ModelRef,
                     registered_card: str | None) -> Provenance:
    """Verify the nullable provenance of every stored row of one extract against the champion ``ref`` and the
    card sha256 the registry holds for it (``registered_card``)."""
    counts = con.execute(
        f"""SELECT count(*),
                  count(*) FILTER (WHERE model_card_sha256 IS NULL),
                  count(*) FILTER (WHERE model_card_sha256 IS NOT NULL AND model_card_sha256 IS DISTINCT FROM ?),
                  count(*) FILTER (WHERE model_source IS DISTINCT FROM ?),
                  count(*) FILTER (WHERE model_name IS DISTINCT FROM ? OR model_version IS DISTINCT FROM ?
                                   OR mlflow_run_id IS DISTINCT FROM ?),
                  count(*) FILTER (WHERE input_sha256 IS NULL
                                   OR NOT regexp_full_match(input_sha256, '[0-9a-f]{{{SHA256_HEX}}}')),
                  count(*) FILTER (WHERE score IS NULL OR isnan(score) OR score < 0 OR score > 1)
           FROM ml.batch_predictions WHERE cohort = ? AND extract_id = ?""",
        [registered_card, champion.SOURCE_ALIAS, ref.name, ref.version, ref.run_id, cohort, extract_id],
    ).fetchall()[0]
    rows, missing, mismatch, source, version, hashes, out_of_range = (int(c) for c in counts)
    if registered_card is None:  # nothing registered to agree with: every row with a card disagrees
        mismatch = rows - missing
    return Provenance(rows, missing, mismatch, source, version, hashes, out_of_range, registered_card)


@dataclass(frozen=True)
class BatchScoringStep:
    model: champion.ModelRef
    summary: champion.BatchScoringSummary
    provenance: Provenance

    @property
    def traceable(self) -> bool:
        """Every row carries the champion's version, its registered card sha256, the alias source and an
        input hash, and every score is a probability."""
        return self.provenance.evidence().passed

    @property
    def rows_missing_provenance(self) -> int:
        p = self.provenance
        return max(p.card_missing, p.card_mismatch, p.not_champion_alias, p.not_the_champion, p.bad_input_hash)

    @property
    def scores_out_of_range(self) -> int:
        return self.provenance.scores_out_of_range


def score_batch(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, extract_id: str, *, tracking_uri: str,
    artifact_root: Path | str, run_id: str | None = None, chunk_rows: int = champion.CHUNK_ROWS,
    log: StepLog = LOG,
) -> BatchScoringStep:
    """``[cohort, batch_predictions]``: the extract's in-cohort encounters scored in chunks by the champion
    (alias ``champion`` on the cohort's candidate or mitigated model; none → a one-line refusal, nothing
    written) into ``ml.batch_predictions``, each row with model version, model card sha256, input sha256 and
    a UTC timestamp; then the rows' provenance verified against the registry."""
    tracking.configure(tracking_uri, Path(artifact_root))
    try:
        ref = champion.resolve_champion(spec.name)
    except champion.NoModelError as exc:
        raise StepError(str(exc), allow_retries=False) from None
    model = champion.load_scoring_model(ref, spec)
    try:
        summary = champion.score_extract(con, model, extract_id, dagster_run_id=run_id, chunk_rows=chunk_rows)
    except ValueError as exc:
        raise StepError(str(exc), allow_retries=False) from None
    registered_card = champion.registered_card_sha256(ref.name, ref.version)
    provenance = check_provenance(con, spec.name, extract_id, ref, registered_card)
    log.info(f"{spec.name}/{extract_id}: {summary.rows_scored} encounters scored by "
             f"{ref.name} v{ref.version} ({ref.source})")
    return BatchScoringStep(ref, summary, provenance)

"""What the validation asset does, as a plain function (no Dagster): ``validated_encounters``."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS, bound_memory
from clinical_mlops.ingestion.deid import key_fingerprint
from clinical_mlops.validation import rules

__all__ = ["DEFAULT_MAX_QUARANTINE_FRACTION", "ValidationStep", "validate"]

DEFAULT_MAX_QUARANTINE_FRACTION = 0.05
"""Above this share of quarantined rows the extract is flagged (WARN) for the data owner."""


@dataclass(frozen=True)
class ValidationStep:
    outcome: rules.ValidationOutcome
    quarantine_fraction: float
    max_quarantine_fraction: float
    pseudonym_key_fingerprint: str

    @property
    def quarantine_within_limit(self) -> bool:
        return self.quarantine_fraction <= self.max_quarantine_fraction


def validate(
    con: duckdb.DuckDBPyConnection,
    extract_id: str,
    *,
    pseudonym_key: bytes,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    engine: str = rules.DEFAULT_ENGINE,
    max_quarantine_fraction: float = DEFAULT_MAX_QUARANTINE_FRACTION,
) -> ValidationStep:
    """``validated_encounters``: one landed extract through the format rules, in bounded memory.

    Valid rows go typed and pseudonymised to ``staging.encounters``, failing rows with their
    reasons to ``staging.quarantine``; the result says whether they reconcile with the landed
    rows and whether the quarantined share stays under ``max_quarantine_fraction``.
    """
    bound_memory(con)
    outcome = rules.validate_extract(con, extract_id, pseudonym_key=pseudonym_key, chunk_rows=chunk_rows,
                                     engine=engine)
    return ValidationStep(outcome=outcome, quarantine_fraction=outcome.rows_quarantined / outcome.rows_landed,
                          max_quarantine_fraction=max_quarantine_fraction,
                          pseudonym_key_fingerprint=key_fingerprint(pseudonym_key))

"""What the validation asset does, as a plain function (no Dagster): ``[source, validated_extract]``."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from clinical_mlops.core.chunking import DEFAULT_CHUNK_ROWS, bound_memory
from clinical_mlops.core.evidence import FAIL, INSUFFICIENT, PASS, Evidence
from clinical_mlops.core.steps import StepError
from clinical_mlops.ingestion.deid import key_fingerprint
from clinical_mlops.sources.contract import LoadedSource
from clinical_mlops.validation import rules
from clinical_mlops.validation.settings import DEFAULT_MAX_QUARANTINE_FRACTION

__all__ = ["DEFAULT_MAX_QUARANTINE_FRACTION", "ValidationStep", "reconcile_evidence", "validate"]


@dataclass(frozen=True)
class ValidationStep:
    outcome: rules.ValidationOutcome
    quarantine_fraction: float
    max_quarantine_fraction: float
    pseudonym_key_fingerprint: str

    @property
    def quarantine_within_limit(self) -> bool:
        return self.quarantine_fraction <= self.max_quarantine_fraction

    @property
    def reconcile(self) -> Evidence:
        return reconcile_evidence(self.outcome)

    @property
    def quarantine_rate(self) -> Evidence:
        share = f"{self.quarantine_fraction:.2%} of the landed rows quarantined (limit {self.max_quarantine_fraction:.2%})"
        return Evidence(PASS if self.quarantine_within_limit else FAIL, share)


def reconcile_evidence(outcome: rules.ValidationOutcome) -> Evidence:
    """``landed_rows_reconcile``: the file's records (counted at landing, apart from the insert) = rows
    landed = valid + quarantined."""
    file_rows, landed = outcome.file_rows, outcome.rows_landed
    accounted = outcome.rows_valid + outcome.rows_quarantined
    if file_rows is None:
        return Evidence(INSUFFICIENT, "the landing step recorded no count of the file's records for this extract "
                                      "(landed before the count existed); land it again to reconcile")
    if file_rows != landed:
        return Evidence(FAIL, f"the file holds {file_rows} records but {landed} rows are in raw.{outcome.source}")
    if accounted != landed:
        return Evidence(FAIL, f"{landed} rows landed but {outcome.rows_valid} valid + {outcome.rows_quarantined} "
                              f"quarantined = {accounted}")
    return Evidence(PASS, f"{file_rows} records in the file = {landed} landed = {outcome.rows_valid} valid + "
                          f"{outcome.rows_quarantined} quarantined")


def _refuse_unlanded(con: duckdb.DuckDBPyConnection, source: LoadedSource, extract_id: str) -> None:
    """Only an extract the identifier gate let through is validated: a refused one stays refused."""
    row = con.execute("SELECT status, rejection_reason FROM raw.extracts WHERE source = ? AND extract_id = ?",
                      [source.name, extract_id]).fetchone()
    if row is None:
        raise StepError(f"extract {extract_id} has not been landed in source {source.name}: land it first",
                        metadata={"extract_id": extract_id, "source": source.name}, allow_retries=False)
    status, reason = row
    if status != "landed":
        raise StepError(f"extract {extract_id} was refused at landing ({reason}); it is not validated and nothing "
                        "downstream uses it", metadata={"extract_id": extract_id, "gate_status": status},
                        allow_retries=False)


def validate(
    con: duckdb.DuckDBPyConnection,
    source: LoadedSource,
    extract_id: str,
    *,
    pseudonym_key: bytes,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    engine: str = rules.DEFAULT_ENGINE,
    max_quarantine_fraction: float = DEFAULT_MAX_QUARANTINE_FRACTION,
) -> ValidationStep:
    """``[source, validated_extract]``: one landed extract through its contract's rules, in bounded memory.

    Valid rows go typed and pseudonymised to ``staging.<source>``, failing rows with their
    reasons to ``staging.<source>__quarantine``; the result says whether they reconcile with the landed
    rows and whether the quarantined share stays under ``max_quarantine_fraction``.
    """
    bound_memory(con)
    _refuse_unlanded(con, source, extract_id)
    outcome = rules.validate_extract(con, source, extract_id, pseudonym_key=pseudonym_key, chunk_rows=chunk_rows,
                                     engine=engine)
    return ValidationStep(outcome=outcome, quarantine_fraction=outcome.rows_quarantined / outcome.rows_landed,
                          max_quarantine_fraction=max_quarantine_fraction,
                          pseudonym_key_fingerprint=key_fingerprint(pseudonym_key))

"""What the audit assets do, as plain functions (no Dagster), one per asset.

* :func:`sync_ledger` — ``audit_ledger``: governance rows into the ledger, its mirror verified;
* :func:`write_model_cards` — ``[cohort, model_card]``: model card and TRIPOD+AI report per role.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.audit import events, ledger, lineage, model_card
from clinical_mlops.core.steps import StepError
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.training import fit

__all__ = ["CARD_ROLES", "OPTIONAL_CARD_ROLES", "LedgerStep", "ModelCardStep", "RoleCard", "sync_ledger", "write_model_cards"]

CARD_ROLES = ("candidate", "baseline")
OPTIONAL_CARD_ROLES = ("mitigated",)
"""Carded when registered: a mitigated challenger can be approved as champion, and its predictions must
trace to a card like any champion's."""


@dataclass(frozen=True)
class LedgerStep:
    outcome: events.RecordOutcome
    verification: ledger.VerificationResult


def sync_ledger(con: duckdb.DuckDBPyConnection, ledger_path: Path) -> LedgerStep:
    """``audit_ledger``: append the governance rows not yet in the hash-chained ledger (registrations,
    alias changes, decisions, approvals, fairness verdicts, incidents), refresh the DuckDB mirror and
    lineage views, and verify chain, signed head and mirror. A ledger that does not verify raises
    :class:`StepError` and nothing is appended."""
    try:
        outcome = events.record_governance(con, ledger_path)
    except ledger.LedgerIntegrityError as exc:
        raise StepError(f"The audit ledger does not verify; nothing was appended: {exc}",
                        allow_retries=False) from None
    lineage.create_views(con)
    return LedgerStep(outcome, ledger.verify(ledger_path, con=con))


@dataclass(frozen=True)
class RoleCard:
    role: str
    card: model_card.ModelCard
    paths: dict[str, Path]
    ledger_entry: ledger.LedgerEntry | None
    """The ledger entry recording the card; None when that card was already recorded."""


@dataclass(frozen=True)
class ModelCardStep:
    cards: tuple[RoleCard, ...]
    governance: events.RecordOutcome
    verification: ledger.VerificationResult


def write_model_cards(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, ledger_path: Path, reports_dir: Path | str,
    tracking_uri: str, artifact_root: Path | str,
) -> ModelCardStep:
    """``[cohort, model_card]``: the model card (nine sections, subgroup analyses with CIs) and TRIPOD+AI
    report of the latest candidate and baseline (and mitigated challenger, when one is registered), written under ``reports_dir/<cohort>/model_cards/``, their
    sha256 in the audit ledger and as an MLflow tag; then governance rows recorded and the ledger verified."""
    cards = []
    for role in CARD_ROLES + OPTIONAL_CARD_ROLES:
        version = fit.latest_model_version(con, spec.name, role)
        if version is None and role in OPTIONAL_CARD_ROLES:
            continue
        if version is None:
            raise StepError(f"no {role} model registered for {spec.name}: materialize it first")
        card = model_card.build_model_card(con, version["model_name"], version["model_version"])
        folder = Path(reports_dir) / spec.name / "model_cards" / f"{card.model_name}_v{card.model_version}"
        paths = model_card.write_model_card(card, folder)
        entry = model_card.record_model_card(card, paths, ledger_path=ledger_path, tracking_uri=tracking_uri,
                                             artifact_root=artifact_root)
        cards.append(RoleCard(role, card, paths, entry))
    governance = events.record_governance(con, ledger_path)
    lineage.create_views(con)
    return ModelCardStep(tuple(cards), governance, ledger.verify(ledger_path))

"""One version's card and report as a value: built from the records, written to files, recorded.

:func:`record_model_card` stores the card's sha256 as the MLflow model-version tag
``model_card_sha256``, logs the documents as artifacts of the model's run and appends a
``model_card_generated`` entry to the audit ledger.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from clinical_mlops.audit import events as audit_events, ledger, lineage
from clinical_mlops.audit.model_card._card import TAG_CARD, TAG_TRIPOD, card_markdown
from clinical_mlops.audit.model_card._facts import gather_facts
from clinical_mlops.audit.model_card._governance import ALERT
from clinical_mlops.audit.model_card._tripod import TripodItem, tripod_items, tripod_markdown
from clinical_mlops.core import reporting
from clinical_mlops.features.cohort import CohortSpecError

__all__ = ["ModelCard", "build_model_card", "record_model_card", "write_model_card"]

_RED = '<strong style="color:#b00020">' + ALERT


def _red_alerts(html: str) -> str:
    """Bold text that starts with the alert sign is shown in red (the Markdown cannot carry colour)."""
    return html.replace("<strong>" + ALERT, _RED)


@dataclass(frozen=True)
class ModelCard:
    """The card and the TRIPOD+AI report of one version, in Markdown; HTML and hashes derived from it."""

    model_name: str
    model_version: str
    cohort: str
    role: str
    mlflow_run_id: str
    markdown: str
    tripod_markdown: str
    tripod_items: tuple[TripodItem, ...]
    subgroups_with_ci: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    fairness_rules: tuple[tuple[str, bool, str], ...] | None = None
    """(rule, blocking, status) of the latest fairness audit; None when fairness was not assessed."""
    waiver_criteria: tuple[str, ...] = ()
    """The criteria of the waivers recorded for this version, oldest first."""

    @property
    def tripod_reported(self) -> int:
        """TRIPOD+AI items reported from recorded facts."""
        return sum(1 for item in self.tripod_items if item.reported)

    @property
    def tripod_not_reported(self) -> int:
        """TRIPOD+AI items without a recorded fact behind them."""
        return len(self.tripod_items) - self.tripod_reported

    @property
    def sha256(self) -> str:
        """sha256 of the card's Markdown: the card is deterministic, so this identifies its content."""
        return hashlib.sha256(self.markdown.encode()).hexdigest()

    @property
    def tripod_sha256(self) -> str:
        return hashlib.sha256(self.tripod_markdown.encode()).hexdigest()

    @property
    def html(self) -> str:
        return _red_alerts(reporting.page(self.markdown, f"Model card — {self.model_name} v{self.model_version}"))

    @property
    def tripod_html(self) -> str:
        return _red_alerts(reporting.page(self.tripod_markdown,
                                          f"TRIPOD+AI report — {self.model_name} v{self.model_version}"))


def build_model_card(con: duckdb.DuckDBPyConnection, model_name: str, version: str | int) -> ModelCard:
    """The model card and TRIPOD+AI report of one registered version (aggregates only)."""
    version = lineage.resolve_version(con, model_name, version)
    try:
        facts = gather_facts(con, model_name, version)
    except CohortSpecError as exc:
        raise LookupError(f"{model_name} v{version}: {exc}") from exc
    markdown, subgroups_with_ci = card_markdown(facts)
    items = tripod_items(facts)
    gate = facts.governance.gate
    return ModelCard(
        model_name=facts.lineage.model_name,
        model_version=facts.lineage.model_version,
        cohort=facts.lineage.cohort,
        role=facts.lineage.role,
        mlflow_run_id=facts.lineage.mlflow_run_id,
        markdown=markdown,
        tripod_markdown=tripod_markdown(facts, items),
        tripod_items=tuple(items),
        subgroups_with_ci=subgroups_with_ci,
        notes=tuple(facts.notes),
        fairness_rules=None if gate is None else tuple((r.rule, r.blocking, r.status) for r in gate.rules),
        waiver_criteria=tuple(w.criterion for w in facts.governance.waivers),
    )


def write_model_card(card: ModelCard, directory: Path | str) -> dict[str, Path]:
    """Write the card and the report as Markdown and HTML; returns the paths by kind."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "model_card.md": directory / "model_card.md",
        "model_card.html": directory / "model_card.html",
        "tripod_report.md": directory / "tripod_report.md",
        "tripod_report.html": directory / "tripod_report.html",
    }
    paths["model_card.md"].write_text(card.markdown, encoding="utf-8")
    paths["model_card.html"].write_text(card.html, encoding="utf-8")
    paths["tripod_report.md"].write_text(card.tripod_markdown, encoding="utf-8")
    paths["tripod_report.html"].write_text(card.tripod_html, encoding="utf-8")
    return paths


def record_model_card(
    card: ModelCard,
    paths: dict[str, Path],
    *,
    ledger_path: Path | str,
    tracking_uri: str | None = None,
    artifact_root: Path | str | None = None,
    actor: str | None = None,
) -> ledger.LedgerEntry | None:
    """Tag the MLflow model version, log the documents to its run, append a ledger entry.

    Returns the ledger entry, or None when this exact card was already recorded.
    """
    if tracking_uri is not None:
        client = lineage.mlflow_client(tracking_uri, artifact_root)
        client.set_model_version_tag(card.model_name, card.model_version, TAG_CARD, card.sha256)
        client.set_model_version_tag(card.model_name, card.model_version, TAG_TRIPOD, card.tripod_sha256)
        for path in paths.values():
            client.log_artifact(card.mlflow_run_id, str(path), artifact_path="model_card")
    return ledger.append(
        ledger_path,
        event_type=audit_events.EVENT_MODEL_CARD,
        subject=f"model:{card.model_name}/{card.model_version}",
        payload={
            "model_name": card.model_name,
            "model_version": card.model_version,
            "mlflow_run_id": card.mlflow_run_id,
            "model_card_sha256": card.sha256,
            "model_card_html_sha256": hashlib.sha256(card.html.encode()).hexdigest(),
            "tripod_report_sha256": card.tripod_sha256,
            "tripod_items_reported": card.tripod_reported,
            "tripod_items_not_reported": card.tripod_not_reported,
            "subgroups_with_ci": card.subgroups_with_ci,
            "mlflow_tag": TAG_CARD if tracking_uri is not None else None,
        },
        actor=actor,
        natural_key=f"model_card:{card.model_name}:{card.model_version}:{card.sha256}",
    )

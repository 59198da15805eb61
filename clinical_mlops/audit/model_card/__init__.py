"""Model cards (Mitchell et al., 2019) and TRIPOD+AI development reports, generated per version.

Both documents are built from what the warehouse and the registry recorded — lineage
(``ml.model_versions``, ``raw.extracts``), held-out performance with bootstrap CIs overall and
per subgroup (``ml.evaluation_metrics``), fairness verdicts where the fairness stage has written
them — and from the cohort specification and the governance policy. Nothing in them is typed by
hand, and they hold aggregates only: counts below :data:`SMALL_CELL` are suppressed.

A card is deterministic for a given record (no generation timestamp), so its sha256 identifies
its content: :func:`record_model_card` stores that hash as the MLflow model-version tag
``model_card_sha256``, logs the documents (Markdown, and HTML rendered by
:func:`clinical_mlops.core.reporting.page`) as artifacts of the model's run and appends a
``model_card_generated`` entry to the audit ledger.

The card also carries the governance record of the version: the fairness gate per rule under the
one evidence rule (failing groups with gap and interval, required groups lacking evidence, groups not
assessable — or, in red, that fairness was not assessed), the waivers, the previous promotion decision,
the newest drift report and the declared prediction time. TRIPOD+AI items are ``reported`` only with a
recorded fact behind them, otherwise ``not reported``, and the counts are computed from the items.

The parts: ``_facts`` (what was recorded, and how a fact is written), ``_governance`` (gate, waivers,
decision, drift), ``_card`` (the nine sections), ``_tripod`` (the checklist), ``_record`` (build, write, record).
"""

from clinical_mlops.audit.model_card._card import (
    MITCHELL_SECTIONS,
    TAG_CARD,
    TAG_TRIPOD,
    card_markdown,
    composition_table,
    extract_table,
)
from clinical_mlops.audit.model_card._facts import (
    CARD_METRICS,
    SMALL_CELL,
    Facts,
    gather_facts,
    sample_text,
    training_sample,
    with_ci,
)
from clinical_mlops.audit.model_card._record import (
    ModelCard,
    build_model_card,
    record_model_card,
    write_model_card,
)
from clinical_mlops.audit.model_card._governance import GovernanceFacts, gather_governance
from clinical_mlops.audit.model_card._tripod import NOT_REPORTED, REPORTED, TripodItem, tripod_items, tripod_markdown

__all__ = [
    "CARD_METRICS",
    "MITCHELL_SECTIONS",
    "NOT_REPORTED",
    "REPORTED",
    "SMALL_CELL",
    "TAG_CARD",
    "TAG_TRIPOD",
    "Facts",
    "GovernanceFacts",
    "ModelCard",
    "TripodItem",
    "build_model_card",
    "card_markdown",
    "composition_table",
    "extract_table",
    "gather_facts",
    "gather_governance",
    "record_model_card",
    "sample_text",
    "training_sample",
    "tripod_items",
    "tripod_markdown",
    "with_ci",
    "write_model_card",
]

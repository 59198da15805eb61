"""The facts of a model card: what the warehouse, the registry and the policy recorded about one version.

Aggregates only — the recorded split is rebuilt (:mod:`clinical_mlops.audit.recorded_inputs`) to count
its composition, and no row leaves this module. Also the few ways a fact is written: numbers
(:func:`clinical_mlops.core.reporting.format_number`), intervals, suppressed small counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from clinical_mlops.audit import ledger, lineage
from clinical_mlops.audit.model_card._governance import GovernanceFacts, gather_governance
from clinical_mlops.audit.recorded_inputs import rebuild_recorded_inputs
from clinical_mlops.core.reporting import format_number
from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.sources import tables
from clinical_mlops.core.warehouse import columns as _columns, table_exists as _table_exists
from clinical_mlops.features.cohort import CohortSpec, load_cohort
from clinical_mlops.governance import policy as governance_policy

__all__ = [
    "CARD_METRICS",
    "SMALL_CELL",
    "Facts",
    "algorithm_text",
    "count_text",
    "fairness_rows",
    "format_value",
    "gather_facts",
    "is_synthetic",
    "latest_evaluation",
    "load_policy_or_none",
    "overall_metric",
    "split_statement",
    "quarantine_counts",
    "sample_text",
    "split_composition",
    "stored_test_predictions",
    "training_sample",
    "with_ci",
]

SMALL_CELL = 11
"""Counts below this are shown as ``<11`` (small-cell suppression) and get no metrics."""

CARD_METRICS: tuple[tuple[str, str], ...] = (
    ("auroc", "AUROC"),
    ("auprc", "AUPRC"),
    ("brier", "Brier"),
    ("ece", "ECE"),
    ("tpr", "Sensitivity (TPR)"),
    ("fpr", "FPR"),
    ("precision", "PPV"),
    ("selection_rate", "Flagged share"),
)


def format_value(value: Any, digits: int = 3) -> str:
    """A table cell: a float with ``digits`` decimals (None and NaN as —), anything else as its text."""
    if value is None or isinstance(value, float):
        return format_number(value, digits)
    return str(value)


def with_ci(estimate: float, lower: float, upper: float) -> str:
    """``0.712 (0.690–0.734)``; ``0.712 (no CI)`` without an interval; — without an estimate."""
    if estimate is None or math.isnan(estimate):
        return "—"
    if lower is None or upper is None or math.isnan(lower) or math.isnan(upper):
        return f"{format_number(float(estimate))} (no CI)"
    return f"{format_number(float(estimate))} ({format_number(float(lower))}–{format_number(float(upper))})"


def count_text(n: int) -> str:
    """A count with thousands separators, or ``<11`` below the small-cell limit."""
    return f"<{SMALL_CELL}" if 0 < n < SMALL_CELL else f"{n:,}"


# ---------------------------------------------------------------------------------------------
# gathering the facts
# ---------------------------------------------------------------------------------------------


def latest_evaluation(con: duckdb.DuckDBPyConnection, name: str, version: str) -> pd.DataFrame:
    """The rows of the most recent evaluation of this version."""
    return con.execute(
        """SELECT * FROM ml.evaluation_metrics WHERE model_name = ? AND model_version = ? AND evaluated_at = (
               SELECT max(evaluated_at) FROM ml.evaluation_metrics WHERE model_name = ? AND model_version = ?)
           ORDER BY attribute, "group", metric""",
        [name, version, name, version],
    ).df()


_FAIRNESS_COLUMNS = ("slice", "attribute", "group", "reference_group", "n", "rule", "metric", "estimate", "lower",
                     "upper", "verdict", "reason")


def fairness_rows(con: duckdb.DuckDBPyConnection, name: str, version: str) -> tuple[list[str], list[tuple]] | None:
    """The latest fairness verdicts of this version, if the fairness stage has written any."""
    table = "monitoring.fairness_verdicts"
    if not _table_exists(con, table):
        return None
    columns = [c for c in _columns(con, table) if c.lower() not in ledger.FORBIDDEN_KEYS]
    if "model_name" not in columns:
        return None
    where, params = "CAST(model_name AS VARCHAR) = ?", [name]
    if "model_version" in columns:
        where += " AND CAST(model_version AS VARCHAR) = ?"
        params.append(version)
    if "evaluated_at" in columns:
        where += f" AND evaluated_at = (SELECT max(evaluated_at) FROM {table} WHERE {where})"
        params = params + params
    shown = [c for c in _FAIRNESS_COLUMNS if c in columns] or [
        c for c in columns if c not in ("model_name", "model_version", "cohort")][:10]
    quoted = ", ".join(f'"{c}"' for c in shown)
    rows = con.execute(f"SELECT {quoted} FROM {table} WHERE {where} LIMIT 200", params).fetchall()

    def suppress(column: str, value: Any) -> Any:
        if column == "n" and isinstance(value, int):
            return count_text(value)
        if isinstance(value, str):  # counts quoted in text ("group n=2 is below ...")
            return re.sub(r"\bn=(\d+)", lambda m: f"n<{SMALL_CELL}" if 0 < int(m.group(1)) < SMALL_CELL else m.group(0),
                          value)
        return value

    return shown, [tuple(suppress(c, v) for c, v in zip(shown, row)) for row in rows]


def load_policy_or_none() -> Any | None:
    """The governance policy, or None when it cannot be loaded (a card does not need it)."""
    try:
        return governance_policy.load_policy()
    except Exception:  # noqa: BLE001 - the governance policy is optional for a card
        return None


def quarantine_counts(con: duckdb.DuckDBPyConnection, source: str, extract_ids: list[str]) -> dict[str, int]:
    """Quarantined rows per extract of the source."""
    if not extract_ids or not table_exists(con, f"staging.{source}__quarantine"):
        return {}
    placeholders = ", ".join("?" for _ in extract_ids)
    return {
        extract_id: int(n)
        for extract_id, n in con.execute(
            f"SELECT extract_id, count(*) FROM {tables.quarantine_table(source)} WHERE extract_id IN ({placeholders}) "
            "GROUP BY 1",
            extract_ids,
        ).fetchall()
    }


@dataclass
class Facts:
    """Everything a card and a TRIPOD report say, read from the records of one version (aggregates only)."""

    lineage: lineage.ModelLineage
    spec: CohortSpec
    spec_current: bool
    evaluation: pd.DataFrame
    demographics: pd.DataFrame | None
    split_counts: dict[str, dict[str, float]]
    quarantined: dict[str, int]
    fairness: tuple[list[str], list[tuple]] | None
    policy: Any | None
    notes: list[str]
    sample: dict[str, Any] | None = None
    governance: GovernanceFacts = GovernanceFacts(gate=None)
    test_predictions: int = 0
    """Held-out predictions stored with the version (``ml.predictions``, split ``test``)."""


def stored_test_predictions(con: duckdb.DuckDBPyConnection, name: str, version: str) -> int:
    """How many held-out predictions of this version are stored (a count, no rows)."""
    if not _table_exists(con, "ml.predictions"):
        return 0
    return int(con.execute("SELECT count(*) FROM ml.predictions WHERE model_name = ? AND model_version = ? "
                           "AND split = 'test'", [name, version]).fetchone()[0])


def training_sample(con: duckdb.DuckDBPyConnection, name: str, version: str) -> dict[str, Any] | None:
    """The recorded training sample (full and used rows, seed) of a version, if recorded."""
    if not _table_exists(con, "ml.training_samples"):
        return None
    cursor = con.execute(
        """SELECT * FROM ml.training_samples WHERE model_name = ? AND model_version = ?
           ORDER BY registered_at DESC LIMIT 1""",
        [name, version],
    )
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row))


def sample_text(sample: dict[str, Any] | None) -> str:
    """One sentence on which training rows the model was fitted on."""
    if sample is None or not sample["subsampled"]:
        return "The model was fitted on every training encounter."
    return (
        f"The model was fitted on a seeded patient-grouped subsample: {int(sample['train_rows_used']):,} of "
        f"{int(sample['train_rows_full']):,} training encounters ({int(sample['train_patients_used']):,} of "
        f"{int(sample['train_patients_full']):,} patients, whole patients kept; limit "
        f"{int(sample['max_training_rows']):,} rows, seed {int(sample['subsample_seed'])})."
    )


def split_composition(con: duckdb.DuckDBPyConnection, spec: CohortSpec, record: lineage.ModelLineage, notes: list[str]):
    """Aggregate train/test composition from the rebuilt recorded split (no rows leave here)."""
    try:
        inputs = rebuild_recorded_inputs(con, spec, [e.extract_id for e in record.extracts])
    except Exception as exc:  # noqa: BLE001 - a card is still useful without this table
        notes.append(f"Training/evaluation composition not available ({type(exc).__name__}).")
        return None, {}
    if (inputs.train_ids_sha256, inputs.test_ids_sha256) != (record.train_ids_sha256, record.test_ids_sha256):
        notes.append("The rebuilt split does not match the recorded id-set hashes; composition tables omitted.")
        return None, {}
    counts = {
        side: {
            "rows": float(len(frame)),
            "patients": float(frame["patient_key"].nunique()),
            "events": float(frame["label"].sum()),
            "prevalence": float(frame["label"].mean()) if len(frame) else float("nan"),
        }
        for side, frame in (("train", inputs.train), ("test", inputs.test))
    }
    parts = []
    for attribute in spec.sensitive_attributes:
        for side, frame in (("train", inputs.train), ("test", inputs.test)):
            grouped = frame.groupby(attribute, dropna=False)["label"].agg(["size", "sum"]).reset_index()
            grouped.columns = ["group", "n", "events"]
            grouped.insert(0, "side", side)
            grouped.insert(0, "attribute", attribute)
            grouped["share"] = grouped["n"] / max(len(frame), 1)
            parts.append(grouped)
    return pd.concat(parts, ignore_index=True), counts


def gather_facts(con: duckdb.DuckDBPyConnection, model_name: str, version: str) -> Facts:
    """The facts of ``model_name`` version ``version`` (already resolved)."""
    record = lineage.model_lineage(con, model_name, version)
    notes: list[str] = []
    spec = load_cohort(record.cohort)
    spec_current = spec.spec_hash == record.cohort_spec_sha256
    if not spec_current:
        notes.append("The cohort specification changed after this version was trained; cohort text below is the "
                     "current specification.")
    evaluation = latest_evaluation(con, record.model_name, record.model_version)
    demographics, split_counts = split_composition(con, spec, record, notes)
    governance = gather_governance(con, record.cohort, record.model_name, record.model_version)
    notes += governance.notes
    return Facts(
        lineage=record,
        spec=spec,
        spec_current=spec_current,
        evaluation=evaluation,
        demographics=demographics,
        split_counts=split_counts,
        quarantined=quarantine_counts(con, record.source, [e.extract_id for e in record.extracts]),
        fairness=fairness_rows(con, record.model_name, record.model_version),
        policy=load_policy_or_none(),
        notes=notes,
        sample=training_sample(con, record.model_name, record.model_version),
        governance=governance,
        test_predictions=stored_test_predictions(con, record.model_name, record.model_version),
    )


def algorithm_text(algorithm: str) -> str:
    """The model type in words."""
    return {
        "logistic_regression": "Logistic regression on standardised numeric features and one-hot encoded "
                               "categorical features (levels seen fewer than 20 times pooled)",
        "hist_gradient_boosting": "Histogram gradient-boosted trees with native categorical splits "
                                  "(ordinal-encoded categories, rare levels pooled), no early stopping",
    }.get(algorithm, algorithm)


def is_synthetic(record: lineage.ModelLineage) -> bool:
    """Whether the version was trained on a synthetic source (or, before sources, synthetic extracts)."""
    return record.source.startswith("synthetic") or any(e.extract_id.startswith("synthetic") for e in record.extracts)


def split_statement(spec: CohortSpec) -> tuple[str, str]:
    """(how the held-out set was drawn, its limitation) for the card and TRIPOD item 12a."""
    if spec.split_strategy == "row":
        return (f"{spec.test_fraction:.0%} of rows by a seeded hash of each row's position (seed {spec.split_seed}): "
                f"source {spec.source} has no patient id, so a patient with several episodes may have rows on both "
                "sides, which can flatter the held-out figures",
                "row-level split (no patient id in the source)")
    return (f"{spec.test_fraction:.0%} of patients by a seeded hash of the pseudonymised patient key "
            f"(seed {spec.split_seed}), so no patient is in both sets", "patient-grouped split")


def overall_metric(evaluation: pd.DataFrame, metric: str) -> pd.Series | None:
    """The overall row of ``metric`` in an evaluation, or None."""
    rows = evaluation[(evaluation["attribute"] == "overall") & (evaluation["metric"] == metric)]
    return None if rows.empty else rows.iloc[0]


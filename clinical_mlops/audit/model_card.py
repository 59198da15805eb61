"""Model cards (Mitchell et al., 2019) and TRIPOD+AI development reports, generated per version.

Both documents are built from what the warehouse and the registry recorded — lineage
(``ml.model_versions``, ``raw.extracts``), held-out performance with bootstrap CIs overall and
per subgroup (``ml.evaluation_metrics``), fairness verdicts where the fairness stage has written
them — and from the cohort specification and the governance policy. Nothing in them is typed by
hand, and they hold aggregates only: counts below :data:`SMALL_CELL` are suppressed.

A card is deterministic for a given record (no generation timestamp), so its sha256 identifies
its content: :func:`record_model_card` stores that hash as the MLflow model-version tag
``model_card_sha256``, logs the documents as artifacts of the model's run and appends a
``model_card_generated`` entry to the audit ledger.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from clinical_mlops.audit import events as audit_events, ledger, lineage
from clinical_mlops.features.cohort import CohortSpec, CohortSpecError, load_cohort
from clinical_mlops.core.warehouse import table_exists as _table_exists, columns as _columns

__all__ = [
    "MITCHELL_SECTIONS",
    "ModelCard",
    "TripodItem",
    "build_model_card",
    "record_model_card",
    "render_html",
    "write_model_card",
]

MITCHELL_SECTIONS: tuple[str, ...] = (
    "Model Details",
    "Intended Use",
    "Factors",
    "Metrics",
    "Evaluation Data",
    "Training Data",
    "Quantitative Analyses",
    "Ethical Considerations",
    "Caveats and Recommendations",
)

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

TAG_CARD = "model_card_sha256"
TAG_TRIPOD = "tripod_report_sha256"


@dataclass(frozen=True)
class TripodItem:
    item: str
    topic: str
    applicable: bool
    text: str


@dataclass(frozen=True)
class ModelCard:
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

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.markdown.encode()).hexdigest()

    @property
    def tripod_sha256(self) -> str:
        return hashlib.sha256(self.tripod_markdown.encode()).hexdigest()

    @property
    def html(self) -> str:
        return render_html(self.markdown, f"Model card — {self.model_name} v{self.model_version}")

    @property
    def tripod_html(self) -> str:
        return render_html(self.tripod_markdown, f"TRIPOD+AI report — {self.model_name} v{self.model_version}")


# ---------------------------------------------------------------------------------------------
# Markdown → HTML (the subset these documents use: headings, tables, lists, quotes, paragraphs)
# ---------------------------------------------------------------------------------------------

_INLINE = (
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
)


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render_html(markdown: str, title: str) -> str:
    """A standalone HTML page for the Markdown subset used by cards, reports and bundle indexes."""
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            body.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        heading = re.match(r"^(#{1,4})\s+(.*)$", stripped)
        if not stripped:
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{2,}", lines[i + 1].strip()):
            flush()
            header = _cells(stripped)
            rows: list[list[str]] = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr></thead><tbody>")
            body.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
            body.append("</tbody></table>")
            continue
        elif stripped.startswith(("- ", "* ")):
            flush()
            items = []
            while i < len(lines) and lines[i].strip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i].strip()[2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif stripped.startswith(">"):
            flush()
            body.append(f"<blockquote>{_inline(stripped.lstrip('> '))}</blockquote>")
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    style = (
        "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:0.5rem 0 1rem}td,th{border:1px solid #ccc;padding:0.25rem 0.5rem;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}code{background:#f6f6f6;padding:0 0.2rem}"
        "blockquote{border-left:4px solid #ccc;margin:0.5rem 0;padding:0.25rem 1rem;color:#555}"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------
# gathering the facts
# ---------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_ci(estimate: float, lower: float, upper: float) -> str:
    if estimate is None or math.isnan(estimate):
        return "—"
    if lower is None or upper is None or math.isnan(lower) or math.isnan(upper):
        return f"{estimate:.3f} (no CI)"
    return f"{estimate:.3f} ({lower:.3f}–{upper:.3f})"


def _count(n: int) -> str:
    return f"<{SMALL_CELL}" if 0 < n < SMALL_CELL else f"{n:,}"




def _latest_evaluation(con: duckdb.DuckDBPyConnection, name: str, version: str) -> pd.DataFrame:
    return con.execute(
        """SELECT * FROM ml.evaluation_metrics WHERE model_name = ? AND model_version = ? AND evaluated_at = (
               SELECT max(evaluated_at) FROM ml.evaluation_metrics WHERE model_name = ? AND model_version = ?)
           ORDER BY attribute, "group", metric""",
        [name, version, name, version],
    ).df()


_FAIRNESS_COLUMNS = ("slice", "attribute", "group", "reference_group", "n", "rule", "metric", "estimate", "lower",
                     "upper", "verdict", "reason")


def _fairness_rows(con: duckdb.DuckDBPyConnection, name: str, version: str) -> tuple[list[str], list[tuple]] | None:
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
            return _count(value)
        if isinstance(value, str):  # counts quoted in text ("group n=2 is below ...")
            return re.sub(r"\bn=(\d+)", lambda m: f"n<{SMALL_CELL}" if 0 < int(m.group(1)) < SMALL_CELL else m.group(0),
                          value)
        return value

    return shown, [tuple(suppress(c, v) for c, v in zip(shown, row)) for row in rows]


def _policy() -> Any | None:
    try:
        from clinical_mlops.governance import policy as policy_module

        return policy_module.load_policy()
    except Exception:  # noqa: BLE001 - the governance policy is optional for a card
        return None


def _quarantine_counts(con: duckdb.DuckDBPyConnection, extract_ids: list[str]) -> dict[str, int]:
    if not extract_ids:
        return {}
    placeholders = ", ".join("?" for _ in extract_ids)
    return {
        extract_id: int(n)
        for extract_id, n in con.execute(
            f"SELECT extract_id, count(*) FROM staging.quarantine WHERE extract_id IN ({placeholders}) GROUP BY 1",
            extract_ids,
        ).fetchall()
    }


@dataclass
class _Facts:
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


def _training_sample(con: duckdb.DuckDBPyConnection, name: str, version: str) -> dict[str, Any] | None:
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


def _sample_text(sample: dict[str, Any] | None) -> str:
    """One sentence on which training rows the model was fitted on."""
    if sample is None or not sample["subsampled"]:
        return "The model was fitted on every training encounter."
    return (
        f"The model was fitted on a seeded patient-grouped subsample: {int(sample['train_rows_used']):,} of "
        f"{int(sample['train_rows_full']):,} training encounters ({int(sample['train_patients_used']):,} of "
        f"{int(sample['train_patients_full']):,} patients, whole patients kept; limit "
        f"{int(sample['max_training_rows']):,} rows, seed {int(sample['subsample_seed'])})."
    )


def _demographics(con: duckdb.DuckDBPyConnection, spec: CohortSpec, record: lineage.ModelLineage, notes: list[str]):
    """Aggregate train/test composition from the rebuilt recorded split (no rows leave here)."""
    from clinical_mlops.audit import replay

    try:
        inputs = replay.rebuild_recorded_inputs(con, spec, [e.extract_id for e in record.extracts])
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


def _gather(con: duckdb.DuckDBPyConnection, model_name: str, version: str) -> _Facts:
    record = lineage.model_lineage(con, model_name, version)
    notes: list[str] = []
    spec = load_cohort(record.cohort)
    spec_current = spec.spec_hash == record.cohort_spec_sha256
    if not spec_current:
        notes.append("The cohort specification changed after this version was trained; cohort text below is the "
                     "current specification.")
    evaluation = _latest_evaluation(con, record.model_name, record.model_version)
    demographics, split_counts = _demographics(con, spec, record, notes)
    return _Facts(
        lineage=record,
        spec=spec,
        spec_current=spec_current,
        evaluation=evaluation,
        demographics=demographics,
        split_counts=split_counts,
        quarantined=_quarantine_counts(con, [e.extract_id for e in record.extracts]),
        fairness=_fairness_rows(con, record.model_name, record.model_version),
        policy=_policy(),
        notes=notes,
        sample=_training_sample(con, record.model_name, record.model_version),
    )


# ---------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------


def _algorithm_text(algorithm: str) -> str:
    return {
        "logistic_regression": "Logistic regression on standardised numeric features and one-hot encoded "
                               "categorical features (levels seen fewer than 20 times pooled)",
        "hist_gradient_boosting": "Histogram gradient-boosted trees with native categorical splits "
                                  "(ordinal-encoded categories, rare levels pooled), no early stopping",
    }.get(algorithm, algorithm)


def _is_synthetic(record: lineage.ModelLineage) -> bool:
    return any(e.extract_id.startswith("synthetic") for e in record.extracts)


def _overall(evaluation: pd.DataFrame, metric: str) -> pd.Series | None:
    rows = evaluation[(evaluation["attribute"] == "overall") & (evaluation["metric"] == metric)]
    return None if rows.empty else rows.iloc[0]


def _quantitative(facts: _Facts) -> tuple[list[str], int]:
    evaluation = facts.evaluation
    if evaluation.empty:
        return ["No evaluation has been recorded for this version yet (`model_evaluation` has not run on it)."], 0
    evaluated_at = evaluation["evaluated_at"].iloc[0]
    lines = [
        f"Held-out test set, evaluated {pd.Timestamp(evaluated_at).strftime('%Y-%m-%d %H:%M:%S')} UTC. "
        "Estimates with 95% bootstrap percentile intervals (patients resampled as rows of the cohort); groups "
        "below the minimum group size get point estimates without an interval; groups with fewer than "
        f"{SMALL_CELL} encounters are suppressed.",
        "",
        "### Overall",
        "",
        "| metric | estimate (95% CI) |",
        "|---|---|",
    ]
    for metric, label in CARD_METRICS:
        row = _overall(evaluation, metric)
        if row is not None:
            lines.append(f"| {label} | {_with_ci(row['estimate'], row['lower'], row['upper'])} |")
    with_ci = 0
    for attribute in [a for a in dict.fromkeys(evaluation["attribute"]) if a != "overall"]:
        subset = evaluation[evaluation["attribute"] == attribute]
        lines += ["", f"### By {attribute}", "",
                  "| group | n | events | " + " | ".join(label for _, label in CARD_METRICS[:6]) + " |",
                  "|---|---|---|" + "---|" * 6]
        for group in sorted(dict.fromkeys(subset["group"])):
            rows = subset[subset["group"] == group].set_index("metric")
            n = int(rows["n"].iloc[0])
            positives = int(rows["n_positive"].iloc[0])
            if n < SMALL_CELL:
                lines.append(f"| {group} | {_count(n)} | — | " + " | ".join("suppressed" for _ in range(6)) + " |")
                continue
            cells = []
            for metric, _label in CARD_METRICS[:6]:
                if metric in rows.index:
                    r = rows.loc[metric]
                    cells.append(_with_ci(r["estimate"], r["lower"], r["upper"]))
                    if metric == "auroc" and not (math.isnan(r["lower"]) or math.isnan(r["upper"])):
                        with_ci += 1
                else:
                    cells.append("—")
            lines.append(f"| {group} | {n:,} | {_count(positives)} | " + " | ".join(cells) + " |")
    if facts.fairness is not None:
        columns, rows = facts.fairness
        lines += ["", "### Fairness verdicts (governance policy)", ""]
        if rows:
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
        else:
            lines.append("The fairness stage has recorded no verdict for this version.")
    return lines, with_ci


def _composition_table(facts: _Facts) -> list[str]:
    if facts.demographics is None:
        return ["Composition by sensitive attribute: not available (see caveats)."]
    lines = ["| attribute | group | train n (share) | train events | test n (share) | test events |",
             "|---|---|---|---|---|---|"]
    demo = facts.demographics
    for attribute in dict.fromkeys(demo["attribute"]):
        subset = demo[demo["attribute"] == attribute]
        for group in sorted(dict.fromkeys(subset["group"].astype(str))):
            cells = []
            for side in ("train", "test"):
                row = subset[(subset["side"] == side) & (subset["group"].astype(str) == group)]
                if row.empty:
                    cells += ["0", "0"]
                    continue
                n, events, share = int(row["n"].iloc[0]), int(row["events"].iloc[0]), float(row["share"].iloc[0])
                cells += [f"{_count(n)} ({share:.1%})" if n >= SMALL_CELL else _count(n), _count(events)]
            lines.append(f"| {attribute} | {group} | " + " | ".join(cells) + " |")
    return lines


def _extract_lines(record: lineage.ModelLineage) -> list[str]:
    lines = ["| extract | sha256 (data version) | rows landed | landed at (UTC) |", "|---|---|---|---|"]
    for e in record.extracts:
        landed = (e.landed_at or "—")[:19]
        lines.append(f"| {e.extract_id} | `{e.sha256}` | {_fmt(e.rows_landed)} | {landed} |")
    return lines


def _card_markdown(facts: _Facts) -> tuple[str, int]:
    r, spec = facts.lineage, facts.spec
    counts = facts.split_counts
    threshold_text = (
        f"{spec.threshold_strategy} = {spec.threshold_value} → score ≥ {r.operating_threshold:.5f} is flagged"
    )
    alerts = _overall(facts.evaluation, "selection_rate") if not facts.evaluation.empty else None
    owners = getattr(getattr(facts.policy, "owners", None), "as_dict", lambda: {})()
    quantitative, with_ci = _quantitative(facts)
    synthetic = _is_synthetic(r)
    sections: dict[str, list[str]] = {}
    sections["Model Details"] = [
        "| field | value |", "|---|---|",
        f"| registered model | `{r.model_name}` version {r.model_version} ({r.role}) |",
        f"| registered at (UTC) | {r.registered_at[:19]} |",
        f"| model type | {_algorithm_text(r.algorithm)} |",
        f"| hyperparameters | `{', '.join(f'{k}={v}' for k, v in sorted(r.params.items()) if k != 'algorithm')}` |",
        f"| MLflow run | `{r.mlflow_run_id}` |",
        f"| code | git commit `{r.git_commit}`{' (working tree had uncommitted changes)' if r.git_dirty else ''} |",
        f"| environment | `uv.lock` sha256 `{r.lock_sha256}` |",
        f"| cohort specification | `{spec.name}` sha256 `{r.cohort_spec_sha256}` |",
        *([f"| {role.replace('_', ' ')} | {who} |" for role, who in owners.items()]),
        *([f"| governance policy | sha256 `{facts.policy.sha256}` |"] if getattr(facts.policy, "sha256", None) else []),
        "| licence | Apache-2.0 (code); the model inherits the terms of its training data |",
    ]
    sections["Intended Use"] = [
        f"**Primary use.** {spec.intended_use or spec.title}",
        "",
        f"**Output.** Probability of the outcome ({spec.target_definition.rstrip('.')}); operating point {threshold_text}"
        + (f", which flags {alerts['estimate'] * 100:.1f} per 100 patients on the test set." if alerts is not None
           else "."),
        "",
        "**Out of scope.** Use outside the source population and care setting; use as the sole basis of a "
        "clinical decision; denying or rationing care; individual prognosis communicated to patients.",
        *(["", "**Synthetic data.** This version was trained on synthetic extracts: it demonstrates the "
           "pipeline and must not be used for care."] if synthetic else []),
    ]
    sections["Factors"] = [
        "Relevant factors evaluated: " + ", ".join(f"`{a}`" for a in spec.sensitive_attributes)
        + " (the cohort's declared sensitive attributes). They are used for evaluation only"
        + ("" if not set(spec.sensitive_attributes) & set(spec.features) else
           " — note that " + ", ".join(sorted(set(spec.sensitive_attributes) & set(spec.features))) + " is also a feature")
        + "; age enters the model as `age_years_mid` (band midpoint).",
        "",
        "Instrumentation and environment: routinely collected inpatient EHR fields (admissions, diagnoses "
        "grouped by ICD-9 chapter, laboratory tests, medications, prior utilisation).",
    ]
    sections["Metrics"] = [
        "- Discrimination: AUROC and AUPRC (average precision).",
        "- Calibration: Brier score, expected calibration error (10 equal-width bins), calibration-in-the-large.",
        f"- At the operating point ({threshold_text}): sensitivity (TPR), false-positive rate, PPV and the share "
        "of patients flagged (alerts per 100 patients).",
        "- Uncertainty: nonparametric bootstrap percentile intervals (95%), the same replicates for every subgroup.",
    ]
    train, test = counts.get("train", {}), counts.get("test", {})
    sections["Evaluation Data"] = [
        f"Held-out patients from the same extracts: {spec.test_fraction:.0%} of patients by a seeded hash of the "
        f"pseudonymised patient key (seed {spec.split_seed}), so no patient is in both sets. "
        f"{r.test_rows:,} encounters"
        + (f" of {int(test['patients']):,} patients, {int(test['events']):,} outcome events "
           f"(prevalence {test['prevalence']:.1%})" if test else "")
        + f". Test id-set sha256 `{r.test_ids_sha256}`.",
        "",
        "The split is random by patient, not temporal: performance on future admissions may be lower.",
    ]
    sections["Training Data"] = [
        f"{r.train_rows:,} encounters"
        + (f" of {int(train['patients']):,} patients, {int(train['events']):,} outcome events "
           f"(prevalence {train['prevalence']:.1%})" if train else "")
        + f". Train id-set sha256 `{r.train_ids_sha256}`. {_sample_text(facts.sample)} "
        f"Outcome: {spec.target_definition} Source: {spec.target_source}",
        "",
        "Exclusions: " + ("; ".join(f"{e.name} — {e.reason.rstrip('.')}" for e in spec.exclusions) or "none") + ".",
        "",
        "Input extracts (data versions):",
        "",
        *_extract_lines(r),
        "",
        "Composition by sensitive attribute:",
        "",
        *_composition_table(facts),
    ]
    sections["Quantitative Analyses"] = quantitative
    sections["Ethical Considerations"] = [
        "- Data: de-identified extracts (HIPAA Safe Harbor gate before landing; patient ids replaced by a keyed "
        "HMAC). This card holds aggregates only; counts below 11 are suppressed.",
        "- Sensitive attributes are recorded to measure performance gaps, not to drive predictions; gaps are "
        "tested against the governance policy and block promotion when outside it.",
        "- Risks: automation bias, and unequal error rates translating into unequal access to transitional "
        "care. Flags are decision support for a care-team review, never a reason to withhold care.",
        "- Race and ethnicity in the source are administratively recorded categories with an `Unknown` level; "
        "performance for small groups is uncertain (wide or absent intervals).",
    ]
    caveats = [
        "- Internal validation only (patient-grouped random split of the same extracts); validate externally and "
        "temporally before clinical use.",
        "- Monitor drift and subgroup performance after deployment; recalibrate or retrain through the change-control "
        "gate when monitoring flags a change.",
        "- Groups below the policy's minimum size have point estimates without intervals: treat them as "
        "insufficient evidence, not as a pass.",
    ]
    if r.git_dirty:
        caveats.append("- The code had uncommitted changes at training time: the git commit alone does not rebuild it.")
    if synthetic:
        caveats.append("- Trained on synthetic data: figures describe the pipeline, not a clinical population.")
    caveats += [f"- {note}" for note in facts.notes]
    sections["Caveats and Recommendations"] = caveats

    lines = [
        f"# Model card: {r.model_name} v{r.model_version}",
        "",
        f"> {spec.title}. Generated from the warehouse and registry records of this version; the sha256 of this "
        f"Markdown file is stored in the audit ledger and as the MLflow model-version tag `{TAG_CARD}`.",
    ]
    for number, title in enumerate(MITCHELL_SECTIONS, 1):
        lines += ["", f"## {number}. {title}", "", *sections[title]]
    return "\n".join(lines) + "\n", with_ci


# ---------------------------------------------------------------------------------------------
# the TRIPOD+AI development report
# ---------------------------------------------------------------------------------------------


def _tripod(facts: _Facts) -> list[TripodItem]:
    r, spec = facts.lineage, facts.spec
    counts = facts.split_counts
    ev = facts.evaluation

    def yes(item: str, topic: str, text: str) -> TripodItem:
        return TripodItem(item, topic, True, text)

    def na(item: str, topic: str, reason: str) -> TripodItem:
        return TripodItem(item, topic, False, reason)

    landed = sorted(e.landed_at for e in r.extracts if e.landed_at)
    quarantined = sum(facts.quarantined.values())
    rows_landed = sum(e.rows_landed or 0 for e in r.extracts)
    policy = facts.policy
    fairness_policy = ""
    if policy is not None and getattr(policy, "sha256", None):
        fairness_policy = f" Thresholds and minimum group size come from the governance policy (sha256 `{policy.sha256}`)."
    overall_auroc = _overall(ev, "auroc") if not ev.empty else None
    train, test = counts.get("train"), counts.get("test")
    class_weight = r.params.get("class_weight")
    items = [
        yes("1", "Title", f"Development and internal validation of a {r.algorithm.replace('_', ' ')} model predicting "
            f"{spec.target_definition[:1].lower()}{spec.target_definition[1:].rstrip('.')} in "
            f"{spec.title.split(',')[-1].strip()}."),
        na("2", "Abstract", "An automatically generated development report has no abstract; the model card summarises it."),
        yes("3a", "Healthcare context", spec.intended_use or spec.title),
        yes("3b", "Target population and intended users", f"{spec.title}. {spec.intended_use}".strip()),
        yes("3c", "Health inequalities", "Performance is reported per " + ", ".join(spec.sensitive_attributes)
            + " with confidence intervals (item 23a), and gaps are gated by the fairness policy." + fairness_policy),
        yes("4", "Objectives", "Development and internal validation (held-out patients) of one registered model version."),
        yes("5a", "Data sources", f"{len(r.extracts)} extract(s) of the Diabetes 130 schema, each identified by its "
            "sha256: " + ", ".join(f"{e.extract_id} (`{e.sha256[:12]}…`)" for e in r.extracts) + "."),
        yes("5b", "Dates", ("Extracts landed " + (f"{landed[0][:10]} to {landed[-1][:10]}" if landed else "—")
            + ". Encounter dates are not part of the de-identified extract (Safe Harbor removes date elements), so "
              "accrual dates are those of the source release.")),
        yes("6a", "Setting", "Inpatient encounters of diabetic patients in the hospitals of the source extract; the "
            "de-identified extract does not name centres."),
        yes("6b", "Eligibility", "All validated encounters of the listed extracts, excluding: "
            + ("; ".join(f"{e.name} ({e.reason.rstrip('.')})" for e in spec.exclusions) or "none") + "."),
        yes("6c", "Treatments", "No intervention was assigned; diabetes medications and dosage changes recorded "
            "during the stay are predictors."),
        yes("7", "Data preparation", f"Every row passed the same de-identification gate, Pandera validation and "
            f"feature SQL, regardless of group; {quarantined:,} of {rows_landed:,} landed rows were quarantined "
            "with reasons. Preparation was therefore identical across groups."),
        yes("8a", "Outcome", f"{spec.target_definition} Source: {spec.target_source}"),
        na("8b", "Outcome assessment", "The outcome is an administrative field; no assessor interpreted it."),
        na("8c", "Blinding of outcome assessment", "No human assessment of the outcome took place."),
        yes("9a", "Predictors", f"{len(spec.numeric_features)} numeric: " + ", ".join(spec.numeric_features)
            + f"; {len(spec.categorical_features)} categorical: " + ", ".join(spec.categorical_features)
            + ". All are available at discharge."),
        na("9b", "Predictor assessment", "Predictors are routinely recorded EHR fields, not assessed for the study."),
        na("9c", "Blinding of predictor assessment", "Predictors were recorded before and independently of the outcome."),
        yes("10", "Sample size", f"All eligible encounters were used: {r.train_rows:,} for development and "
            f"{r.test_rows:,} for evaluation ({_sample_text(facts.sample)[:-1]})"
            + (f", with {int(train['events']):,} and {int(test['events']):,} outcome events" if train and test else "")
            + ". No formal sample-size calculation."),
        yes("11", "Missing data", "Missing categorical values are explicit levels ('Unknown', 'None' = not "
            "measured) set in SQL; rows failing validation are quarantined, not imputed; categories unseen in "
            "training map to an unknown code at prediction time."),
        yes("12a", "Data usage", f"Patient-grouped split ({spec.test_fraction:.0%} of patients to test, seeded hash, "
            f"seed {spec.split_seed}); id-set sha256 train `{r.train_ids_sha256[:16]}…`, test `{r.test_ids_sha256[:16]}…`."),
        yes("12b", "Predictor handling", _algorithm_text(r.algorithm) + "."),
        yes("12c", "Model type, building and tuning", f"{_algorithm_text(r.algorithm)}; fixed hyperparameters from "
            "configuration, no search: " + ", ".join(f"{k}={v}" for k, v in sorted(r.params.items()) if k != "algorithm")
            + ". A logistic-regression baseline is always trained beside the candidate."),
        na("12d", "Heterogeneity across clusters", "The extract does not identify centres, so no cluster analysis is possible."),
        yes("12e", "Performance measures", "AUROC, AUPRC, Brier score, expected calibration error, calibration-in-"
            "the-large, and sensitivity, FPR, PPV and flagged share at the operating threshold, with 95% bootstrap "
            "percentile intervals overall and per subgroup."),
        yes("12f", "Model updating after evaluation", "None: the evaluated model is the registered artifact."),
        yes("12g", "Calculation of predictions in evaluation", "Scores of the registered pipeline on the held-out "
            "patients, computed at fit time and stored with the version (reproduced bit for bit by `audit replay`)."),
        yes("13", "Class imbalance", f"No resampling; class_weight = {class_weight!r}. "
            + (f"Outcome prevalence {train['prevalence']:.1%} (train), {test['prevalence']:.1%} (test)." if train and test else "")),
        yes("14", "Fairness", "Subgroup performance with intervals for " + ", ".join(spec.sensitive_attributes)
            + (" and fairness verdicts recorded by the fairness stage" if facts.fairness else "")
            + "; the sensitive attributes are not model inputs." + fairness_policy),
        yes("15", "Model output", f"Predicted probability; operating threshold by {spec.threshold_strategy} "
            f"({spec.threshold_value}) fixed on the training data: {r.operating_threshold:.5f}."),
        yes("16", "Development vs evaluation data", "Both come from the same extracts and preparation; evaluation "
            "patients are disjoint from development patients. Composition is compared in item 20c."),
        na("17", "Ethical approval", "Not recorded by the pipeline; the study team states approval for real data."),
        na("18a", "Funding", "Not recorded by the pipeline."),
        na("18b", "Conflicts of interest", "Not recorded by the pipeline."),
        yes("18c", "Protocol", "The cohort specification (sha256 " + f"`{r.cohort_spec_sha256[:16]}…`)"
            + (f" and the governance policy (sha256 `{policy.sha256[:16]}…`)" if fairness_policy else "")
            + " are the protocol, versioned with the code."),
        na("18d", "Registration", "Not registered; internal development report."),
        yes("18e", "Data sharing", "Patient-level data are not shared; extracts are identified by sha256 so an "
            "authorised party can check they hold the same data."),
        yes("18f", "Code sharing", f"Code at git commit `{r.git_commit}`, environment locked by uv.lock "
            f"(sha256 `{r.lock_sha256[:16]}…`); `clinical-mlops audit replay` rebuilds the model."),
        na("19", "Patient and public involvement", "Not recorded by the pipeline."),
        yes("20a", "Flow of participants", f"{rows_landed:,} rows landed → {quarantined:,} quarantined → "
            f"{r.train_rows + r.test_rows:,} eligible encounters after exclusions → {r.train_rows:,} development / "
            f"{r.test_rows:,} evaluation."),
    ]
    composition = "\n\n" + "\n".join(_composition_table(facts)) if facts.demographics is not None else ""
    items += [
        (yes if facts.demographics is not None else na)(
            "20b", "Participant characteristics",
            "Composition by sensitive attribute (counts below 11 suppressed):" + composition
            if facts.demographics is not None else "Composition could not be rebuilt (see the model card's caveats)."),
        (yes if facts.demographics is not None else na)(
            "20c", "Development vs evaluation characteristics",
            "See the train and test columns of item 20b." if facts.demographics is not None
            else "Composition could not be rebuilt."),
        yes("21", "Participants and events per analysis", f"Development {r.train_rows:,} encounters, evaluation "
            f"{r.test_rows:,}; per-subgroup n and events in the model card's quantitative analyses."),
        yes("22", "Full model", f"Registered artifact `models:/{r.model_name}/{r.model_version}` (MLflow run "
            f"`{r.mlflow_run_id}`); canonical parameter hashes are compared by `audit replay`."),
        (yes if overall_auroc is not None else na)(
            "23a", "Performance with CIs, including key subgroups",
            (f"AUROC {_with_ci(overall_auroc['estimate'], overall_auroc['lower'], overall_auroc['upper'])}; all "
             "measures per subgroup in the model card, section 7.") if overall_auroc is not None
            else "No evaluation recorded for this version yet."),
        na("23b", "Heterogeneity across clusters", "No cluster identifiers (see 12d)."),
        na("24", "Model updating", "This report covers one registered version; updates go through the change-control gate "
           "and get their own report."),
        na("25", "Interpretation", "For the study team; the pipeline reports facts, not conclusions."),
        yes("26", "Limitations", "Internal, non-temporal validation; administrative outcome; subgroup estimates "
            "uncertain for small groups" + ("; synthetic training data" if _is_synthetic(r) else "") + "."),
        yes("27a", "Usability with missing data", "Unknown or unseen categorical values are accepted and mapped to an "
            "unknown code; numeric inputs are required by the input schema."),
        yes("27b", "User requirements", "Users see a risk score and a flag at the operating threshold; the model "
            "version and the model card's hash accompany each prediction."),
        na("27c", "Future research", "For the study team."),
    ]
    return items


def _tripod_markdown(facts: _Facts, items: list[TripodItem]) -> str:
    r = facts.lineage
    applicable = sum(1 for i in items if i.applicable)
    lines = [
        f"# TRIPOD+AI development report: {r.model_name} v{r.model_version}",
        "",
        f"> Items of the TRIPOD+AI checklist (Collins et al., BMJ 2024), filled from the records of this version: "
        f"{applicable} reported, {len(items) - applicable} not applicable with the reason given. Topics are "
        "paraphrased; see the statement for the full wording.",
        "",
        "| item | topic | status | content |",
        "|---|---|---|---|",
    ]
    long_items = []
    for item in items:
        status = "reported" if item.applicable else "N/A"
        text = item.text
        if "\n" in text:
            long_items.append(item)
            text = text.split("\n")[0] + " (table below)"
        lines.append(f"| {item.item} | {item.topic} | {status} | {text.replace('|', '/')} |")
    for item in long_items:
        lines += ["", f"### Item {item.item}: {item.topic}", "", item.text]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def build_model_card(con: duckdb.DuckDBPyConnection, model_name: str, version: str | int) -> ModelCard:
    """The model card and TRIPOD+AI report of one registered version (aggregates only)."""
    version = lineage.resolve_version(con, model_name, version)
    try:
        facts = _gather(con, model_name, version)
    except CohortSpecError as exc:
        raise LookupError(f"{model_name} v{version}: {exc}") from exc
    markdown, with_ci = _card_markdown(facts)
    items = _tripod(facts)
    return ModelCard(
        model_name=facts.lineage.model_name,
        model_version=facts.lineage.model_version,
        cohort=facts.lineage.cohort,
        role=facts.lineage.role,
        mlflow_run_id=facts.lineage.mlflow_run_id,
        markdown=markdown,
        tripod_markdown=_tripod_markdown(facts, items),
        tripod_items=tuple(items),
        subgroups_with_ci=with_ci,
        notes=tuple(facts.notes),
    )


def mlflow_client(tracking_uri: str, artifact_root: Path | str | None = None):
    """An MLflow client on ``tracking_uri`` (configuring the artifact root when given)."""
    from clinical_mlops.core import tracking  # noqa: F401 - switches telemetry off before mlflow loads

    import mlflow
    from mlflow.tracking import MlflowClient

    if artifact_root is not None:
        tracking.configure(tracking_uri, Path(artifact_root))
    else:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    return MlflowClient()


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
        client = mlflow_client(tracking_uri, artifact_root)
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
            "tripod_items_reported": sum(1 for i in card.tripod_items if i.applicable),
            "tripod_items_not_applicable": sum(1 for i in card.tripod_items if not i.applicable),
            "subgroups_with_ci": card.subgroups_with_ci,
            "mlflow_tag": TAG_CARD if tracking_uri is not None else None,
        },
        actor=actor,
        natural_key=f"model_card:{card.model_name}:{card.model_version}:{card.sha256}",
    )

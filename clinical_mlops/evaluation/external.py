"""External (temporal or other-site) evaluation of a registered model on one extract it was not trained on.

The extract's in-cohort rows of ``features.<cohort>`` are scored by the model and the realised
metrics are computed with bootstrap intervals, overall and per sensitive attribute
(:func:`~clinical_mlops.evaluation.metrics.metrics_by_group`), then appended to
``ml.external_evaluations``. The model's own held-out figures (the latest ``ml.evaluation_metrics``
of that version) are kept beside them for the comparison. Only aggregates leave the warehouse:
the report and the table hold counts and metrics, never rows or scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core.chunking import iter_frames
from clinical_mlops.core.evidence import INSUFFICIENT, Evidence
from clinical_mlops.core.warehouse import insert_frame, quote_identifier, table_exists
from clinical_mlops.evaluation import metrics
from clinical_mlops.features.cohort import CohortSpec

__all__ = ["EXTERNAL_EVALUATIONS_DDL", "MODEL_KINDS", "RELATIONS", "WIDE_AUROC_INTERVAL", "BootstrapSettings",
           "ExternalEvaluation", "ensure_table", "evaluate_extract", "extract_counts", "held_out_metrics",
           "not_assessed_markdown", "report_markdown", "transport_sentence"]

MODEL_KINDS = ("champion", "latest_candidate")
RELATIONS = ("external_site", "later_extract")
WIDE_AUROC_INTERVAL = 0.10
"""An AUROC interval wider than this is too wide for one extract to settle transport (the report says so)."""

EXTERNAL_EVALUATIONS_DDL = """CREATE TABLE IF NOT EXISTS ml.external_evaluations (
    evaluated_at TIMESTAMP NOT NULL,      -- UTC
    cohort VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    extract_id VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    model_kind VARCHAR NOT NULL,          -- champion | latest_candidate
    relation VARCHAR NOT NULL,            -- external_site | later_extract
    attribute VARCHAR NOT NULL,
    "group" VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    n_positive BIGINT NOT NULL,
    metric VARCHAR NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE
)"""

_COLUMNS = ["evaluated_at", "cohort", "source", "extract_id", "model_name", "model_version", "model_kind",
            "relation", "attribute", "group", "n", "n_positive", "metric", "estimate", "lower", "upper"]


class BootstrapSettings(Protocol):
    """What the evaluation takes from :class:`~clinical_mlops.evaluation.steps.EvaluationSettings`."""

    n_bootstrap: int
    seed: int
    min_group_size: int
    exact_max_rows: int


@dataclass(frozen=True)
class ExternalEvaluation:
    """One model version's realised performance on one extract, with its held-out figures for comparison."""

    cohort: str
    source: str
    extract_id: str
    model_name: str
    model_version: str
    model_kind: str
    relation: str
    threshold: float
    table: pd.DataFrame
    """attribute, group, n, n_positive, metric, estimate, lower, upper (as ``metrics_by_group``)."""
    held_out: dict[str, metrics.MetricEstimate] = field(default_factory=dict)
    """The version's latest held-out overall estimates by metric (empty when none is recorded)."""
    bootstrap: dict = field(default_factory=dict)
    evaluated_at: datetime | None = None

    def overall(self, metric: str) -> metrics.MetricEstimate:
        rows = self.table[(self.table["attribute"] == metrics.OVERALL_ATTRIBUTE) & (self.table["metric"] == metric)]
        row = rows.iloc[0]
        return metrics.MetricEstimate(metric, float(row["estimate"]), float(row["lower"]), float(row["upper"]))

    @property
    def n(self) -> int:
        return int(self.table.loc[self.table["attribute"] == metrics.OVERALL_ATTRIBUTE, "n"].iloc[0])

    @property
    def n_positive(self) -> int:
        return int(self.table.loc[self.table["attribute"] == metrics.OVERALL_ATTRIBUTE, "n_positive"].iloc[0])

    @property
    def model(self) -> str:
        return f"{self.model_name} v{self.model_version}"

    @property
    def auroc_width(self) -> float:
        auroc = self.overall("auroc")
        return auroc.upper - auroc.lower


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(EXTERNAL_EVALUATIONS_DDL)


def extract_counts(con: duckdb.DuckDBPyConnection, spec: CohortSpec, extract_id: str) -> tuple[int, int]:
    """(in-cohort rows, positives) of one extract in ``features.<cohort>`` ((0, 0) before features exist)."""
    if not table_exists(con, spec.features_table):
        return 0, 0
    n, positives = con.execute(f"SELECT count(*), coalesce(sum(label), 0) FROM {spec.features_table} "
                               "WHERE extract_id = ?", [extract_id]).fetchone()
    return int(n), int(positives)


def held_out_metrics(con: duckdb.DuckDBPyConnection, model_name: str, model_version: str
                     ) -> dict[str, metrics.MetricEstimate]:
    """The version's overall held-out estimates from its latest evaluation in ``ml.evaluation_metrics``."""
    if not table_exists(con, "ml.evaluation_metrics"):
        return {}
    rows = con.execute(
        """SELECT metric, estimate, lower, upper FROM ml.evaluation_metrics
           WHERE model_name = ? AND model_version = ? AND attribute = ? AND evaluated_at = (
               SELECT max(evaluated_at) FROM ml.evaluation_metrics WHERE model_name = ? AND model_version = ?)""",
        [model_name, model_version, metrics.OVERALL_ATTRIBUTE, model_name, model_version],
    ).fetchall()
    nan = float("nan")
    return {m: metrics.MetricEstimate(m, *(nan if v is None else float(v) for v in (e, lo, hi)))
            for m, e, lo, hi in rows}


def _scored(con: duckdb.DuckDBPyConnection, spec: CohortSpec, extract_id: str,
            scores_fn: Callable[[pd.DataFrame], np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    attributes = list(dict.fromkeys(spec.sensitive_attributes))
    columns = ", ".join(quote_identifier(c) for c in dict.fromkeys(["label", *spec.features, *attributes]))
    sql = f"SELECT {columns} FROM {spec.features_table} WHERE extract_id = ? ORDER BY encounter_id"
    labels, scores, groups = [], [], {a: [] for a in attributes}
    for frame in iter_frames(con, sql, [extract_id]):
        labels.append(frame["label"].to_numpy(dtype=np.int64))
        scores.append(np.asarray(scores_fn(frame), dtype=np.float64))
        for a in attributes:
            groups[a].append(frame[a].to_numpy(dtype=object))
    if not labels:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64), {a: np.array([]) for a in attributes}
    return np.concatenate(labels), np.concatenate(scores), {a: np.concatenate(v) for a, v in groups.items()}


def evaluate_extract(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    extract_id: str,
    *,
    model_name: str,
    model_version: str,
    model_kind: str,
    relation: str,
    threshold: float,
    scores_fn: Callable[[pd.DataFrame], np.ndarray],
    settings: BootstrapSettings,
) -> ExternalEvaluation:
    """Score the extract's in-cohort rows with ``scores_fn`` and store the realised metrics with CIs.

    ``score >= threshold`` is a positive prediction. Raises ``ValueError`` when the extract has no
    in-cohort row or a single class (callers turn that into insufficient evidence first).
    """
    if model_kind not in MODEL_KINDS:
        raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {model_kind!r}")
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    y, score, groups = _scored(con, spec, extract_id, scores_fn)
    if y.size == 0 or np.unique(y).size < 2:
        raise ValueError(f"{extract_id}: {y.size} in-cohort rows with {int(y.sum())} positives; AUROC is undefined")
    table = metrics.metrics_by_group(
        y, score, groups, threshold=threshold, n_boot=settings.n_bootstrap, seed=settings.seed,
        min_group_size=settings.min_group_size, exact_max_rows=settings.exact_max_rows,
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    ensure_table(con)
    stored = table.assign(evaluated_at=now, cohort=spec.name, source=spec.source, extract_id=extract_id,
                          model_name=model_name, model_version=str(model_version), model_kind=model_kind,
                          relation=relation)[_COLUMNS]
    insert_frame(con, "ml.external_evaluations", stored, view="external_evaluation_rows")
    return ExternalEvaluation(
        cohort=spec.name, source=spec.source, extract_id=extract_id, model_name=model_name,
        model_version=str(model_version), model_kind=model_kind, relation=relation, threshold=float(threshold),
        table=table, held_out=held_out_metrics(con, model_name, str(model_version)),
        bootstrap=metrics.bootstrap_description(int(y.size), n_boot=settings.n_bootstrap,
                                                exact_max_rows=settings.exact_max_rows),
        evaluated_at=now,
    )


def _ci(estimate: metrics.MetricEstimate, digits: int = 3) -> str:
    if math.isnan(estimate.estimate):
        return "undefined"
    if math.isnan(estimate.lower) or math.isnan(estimate.upper):
        return f"{estimate.estimate:.{digits}f} (no interval)"
    return f"{estimate.estimate:.{digits}f} [{estimate.lower:.{digits}f}, {estimate.upper:.{digits}f}]"


def transport_sentence(evaluation: ExternalEvaluation, target: str = "events") -> str:
    """One honest sentence on what the AUROC interval can and cannot say about transport."""
    auroc = evaluation.overall("auroc")
    counts = f"n = {evaluation.n} with {evaluation.n_positive} {target}"
    if math.isnan(auroc.lower) or math.isnan(auroc.upper):
        return f"{counts}: the AUROC has no interval; this extract alone cannot confirm or refute transport."
    width = auroc.upper - auroc.lower
    span = f"the AUROC interval spans {auroc.lower:.2f}–{auroc.upper:.2f} ({width:.2f} wide)"
    if width > WIDE_AUROC_INTERVAL:
        return f"{counts}: {span}; this extract alone cannot confirm or refute transport."
    held = evaluation.held_out.get("auroc")
    if held is None or math.isnan(held.estimate):
        return f"{counts}: {span}; no held-out AUROC is recorded to compare it with."
    inside = auroc.lower <= held.estimate <= auroc.upper
    verdict = ("contains the held-out AUROC: no evidence of a loss in transport" if inside else
               "excludes the held-out AUROC: discrimination differs on this extract")
    return f"{counts}: {span}, which {verdict} ({held.estimate:.3f})."


def report_markdown(evaluation: ExternalEvaluation, *, evidence: Evidence | None = None, target: str = "events",
                    attributes: tuple[str, ...] = ()) -> str:
    """The external evaluation as Markdown: counts, AUROC with its interval, the operating point,
    calibration, the held-out comparison and per-group AUROC (aggregates only)."""
    e = evaluation
    auroc, held = e.overall("auroc"), e.held_out.get("auroc")
    width = "—" if math.isnan(e.auroc_width) else f"{e.auroc_width:.3f}"
    lines = [
        f"# External evaluation: {e.cohort} on {e.extract_id}", "",
        f"- Model: {e.model} ({e.model_kind.replace('_', ' ')}); source `{e.source}`",
        f"- Relation: {e.relation.replace('_', ' ')} (the model was not trained on this extract)",
        f"- Rows: n = {e.n}, {target}: {e.n_positive} ({e.n_positive / e.n:.1%})",
        f"- AUROC: {_ci(auroc)}; interval width {width}",
        f"- Held-out AUROC of the same version: {_ci(held) if held else 'not recorded (materialize model_evaluation)'}",
        f"- At the operating threshold {e.threshold:.4g}: recall {_ci(e.overall('tpr'))}, "
        f"precision {_ci(e.overall('precision'))}, flagged {_ci(e.overall('selection_rate'))}",
        f"- Brier: {_ci(e.overall('brier'), 4)}; calibration-in-the-large (mean score − observed rate): "
        f"{_ci(e.overall('calibration_in_the_large'), 4)}",
        f"- Intervals: {e.bootstrap.get('replicates', '?')} bootstrap replicates ({e.bootstrap.get('method', '?')}), 95 %",
        "", transport_sentence(e, target), "",
    ]
    if evidence is not None:
        lines += [f"**Check `external_performance_assessed`: {evidence.status}** — {evidence.reason}", ""]
    table = e.table[(e.table["metric"] == "auroc") & (e.table["attribute"] != metrics.OVERALL_ATTRIBUTE)]
    if attributes:
        table = table[table["attribute"].isin(attributes)]
    if not table.empty:
        lines += ["| attribute | group | n | positives | AUROC [95% CI] |", "|---|---|---|---|---|"]
        for r in table.itertuples(index=False):
            lines.append(f"| {r.attribute} | {r.group} | {r.n} | {r.n_positive} | "
                         f"{_ci(metrics.MetricEstimate('auroc', r.estimate, r.lower, r.upper))} |")
        lines.append("")
    return "\n".join(lines)


def not_assessed_markdown(cohort: str, extract_id: str, evidence: Evidence) -> str:
    """The report of an extract that was not evaluated, saying why."""
    status = "insufficient evidence" if evidence.status == INSUFFICIENT else evidence.status
    return f"# External evaluation: {cohort} on {extract_id}\n\nNot assessed ({status}): {evidence.reason}\n"

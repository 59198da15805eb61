"""Blocking fairness failures of champion and challenger: from the fairness report, or computed here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from clinical_mlops.core import bootstrap
from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.governance.policy import BLOCKING_SEVERITIES, Policy
from clinical_mlops.registry.change_control._diff import ModelDescription
from clinical_mlops.registry.change_control._paired import PAIRED_METRICS, PairedResult

__all__ = ["FairnessComparison", "compare_fairness"]


@dataclass(frozen=True)
class FairnessComparison:
    source: str  # fairness_verdicts | computed_gap_rules | not_assessed
    champion_failures: tuple[str, ...]
    challenger_failures: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def new_failures(self) -> tuple[str, ...]:
        return tuple(f for f in self.challenger_failures if f not in set(self.champion_failures))

    @property
    def resolved(self) -> tuple[str, ...]:
        return tuple(f for f in self.champion_failures if f not in set(self.challenger_failures))


def _first(columns: set[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _blocking_failures_from_table(con: duckdb.DuckDBPyConnection, policy: Policy, model: ModelDescription
                                  ) -> tuple[str, ...] | None:
    """Blocking-severity failures of one version in ``monitoring.fairness_verdicts`` (None: no verdicts)."""
    columns = {c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'monitoring' AND table_name = 'fairness_verdicts'").fetchall()}
    name_col = _first(columns, "model_name", "model")
    version_col = _first(columns, "model_version", "version")
    verdict_col = _first(columns, "verdict", "status", "passed")
    metric_col = _first(columns, "metric", "rule", "check_name")
    if not (name_col and version_col and verdict_col and metric_col):
        return None
    attribute_col = _first(columns, "attribute", "sensitive_attribute")
    severity_col = _first(columns, "severity")
    time_col = _first(columns, "evaluated_at", "computed_at", "created_at", "assessed_at")
    latest = (f"AND {time_col} = (SELECT max({time_col}) FROM monitoring.fairness_verdicts "
              f"WHERE {name_col} = ? AND CAST({version_col} AS VARCHAR) = ?)") if time_col else ""
    params = [model.name, model.version] * (2 if time_col else 1)
    selected = ", ".join(c for c in (metric_col, attribute_col, severity_col, verdict_col) if c)
    rows = con.execute(
        f"""SELECT {selected} FROM monitoring.fairness_verdicts
            WHERE {name_col} = ? AND CAST({version_col} AS VARCHAR) = ? {latest}""",
        params,
    ).fetchall()
    if not rows:
        return None
    severities = {rule.name: rule.severity for rule in policy.fairness.metrics}
    failures = set()
    for row in rows:
        values = dict(zip([c for c in (metric_col, attribute_col, severity_col, verdict_col) if c], row))
        verdict = values[verdict_col]
        failed = (verdict is False) if verdict_col == "passed" else str(verdict).lower() in ("fail", "failed", "failure")
        metric = str(values[metric_col]).removesuffix("_within_policy")
        severity = str(values.get(severity_col) or severities.get(metric, "block_promotion"))
        if failed and severity in BLOCKING_SEVERITIES:
            failures.add(f"{metric}:{values[attribute_col]}" if attribute_col else metric)
    return tuple(sorted(failures))


_GAP_METRICS = {"recall_gap": "recall", "fpr_gap": "fpr"}


def _computed_gap_failures(paired: PairedResult, policy: Policy, attributes: Sequence[str], model_index: int
                           ) -> tuple[str, ...]:
    """Blocking gap rules (recall/FPR gap to the reference group) failing for one model."""
    failures = set()
    table = paired.table
    for rule in policy.fairness.blocking_metrics:
        metric = _GAP_METRICS.get(rule.name)
        if metric is None or rule.max_difference is None:
            continue
        m = PAIRED_METRICS.index(metric)
        for attribute in attributes:
            try:
                reference = policy.fairness.attribute(attribute).reference
            except KeyError:
                continue
            ref_reps = paired.replicates.get((attribute, reference))
            if ref_reps is None:
                continue
            for group in table.loc[table["attribute"] == attribute, "group"].unique():
                reps = paired.replicates.get((attribute, group))
                if group == reference or reps is None:
                    continue
                gap = reps[:, model_index, m] - ref_reps[:, model_index, m]
                gap = gap[np.isfinite(gap)]
                if gap.size == 0:
                    continue
                lo, hi = bootstrap.percentile_interval(gap, policy.fairness.confidence)
                if lo > rule.max_difference or hi < -rule.max_difference:
                    failures.add(f"{rule.name}:{attribute}={group}")
    return tuple(sorted(failures))


def compare_fairness(con: duckdb.DuckDBPyConnection, policy: Policy, champion: ModelDescription | None,
                     challenger: ModelDescription, paired: PairedResult, attributes: Sequence[str]
                     ) -> FairnessComparison:
    """Blocking fairness failures of each model, from the fairness report's table or computed here."""
    if table_exists(con, "monitoring.fairness_verdicts"):
        challenger_failures = _blocking_failures_from_table(con, policy, challenger)
        if challenger_failures is not None:
            champion_failures = _blocking_failures_from_table(con, policy, champion) if champion else ()
            notes = ()
            if champion is not None and champion_failures is None:
                notes = ("the champion has no recorded fairness verdicts: every challenger failure counts as new",)
            return FairnessComparison("fairness_verdicts", tuple(champion_failures or ()), challenger_failures, notes)
    computable = [r.name for r in policy.fairness.blocking_metrics if r.name in _GAP_METRICS]
    if not computable:
        return FairnessComparison("not_assessed", (), (), ("no fairness verdicts recorded and no computable "
                                                          "blocking rule in the policy",))
    two = champion is not None
    return FairnessComparison(
        "computed_gap_rules",
        _computed_gap_failures(paired, policy, attributes, 0) if two else (),
        _computed_gap_failures(paired, policy, attributes, 1 if two else 0),
        (f"fairness_report verdicts not found; evaluated {', '.join(computable)} on the paired "
         "bootstrap (fails only when the whole interval lies outside the bound)",),
    )

"""The mitigated challenger: the ``<cohort>_mitigated`` version derived from the current candidate.

Change control assesses it on the same held-out rows as the candidate (paired against the
champion, or alone), and shows its trade-off beside the candidate's: AUROC, and each failing
group's gap before and after, from the two fairness audits. A mitigation is a modification that
needs a named approver's review, so its decision is at best ``pending_approval``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb

from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.registry.change_control._report import ChangeControlReport

__all__ = ["MITIGATED_ROLE", "MitigatedTradeoff", "derived_mitigation", "review_reason", "tradeoff"]

MITIGATED_ROLE = "mitigated"


@dataclass(frozen=True)
class MitigatedTradeoff:
    label: str
    base_label: str
    method: str
    status: str
    next_command: str | None
    candidate_auroc: tuple[float, float, float]
    """Point estimate, lower and upper bound."""
    mitigated_auroc: tuple[float, float, float]
    recall_gaps: tuple[dict, ...] = ()
    """Per group the candidate fails (or cannot show): ``rule``, ``group``, ``before`` and ``after`` (estimate, CI, verdict)."""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def derived_mitigation(con: duckdb.DuckDBPyConnection, cohort: str, candidate_name: str, candidate_version: str
                       ) -> dict | None:
    """The newest ``ml.model_versions`` row of role ``mitigated`` whose base model is this candidate version."""
    cursor = con.execute(
        "SELECT * FROM ml.model_versions WHERE cohort = ? AND role = ? ORDER BY registered_at DESC, "
        "CAST(model_version AS INTEGER) DESC", [cohort, MITIGATED_ROLE])
    names = [d[0] for d in cursor.description]
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        try:
            base = json.loads(row["params_json"]).get("base_model")
        except (TypeError, ValueError):
            continue
        if base == f"{candidate_name}/{candidate_version}":
            return row
    return None


def review_reason(row: dict) -> str:
    params = json.loads(row["params_json"])
    return (f"a mitigation ({params.get('mitigation', 'unknown method')}) of {params.get('base_model')} is a "
            "modification: a named approver reviews its trade-off and promotes it by hand")


def _verdict(con: duckdb.DuckDBPyConnection, audit_id: str | None, rule: str, label: str) -> dict | None:
    if audit_id is None or not table_exists(con, "monitoring.fairness_verdicts"):
        return None
    slice_name, group = label.split("=", 1)
    row = con.execute(
        """SELECT estimate, lower, upper, verdict FROM monitoring.fairness_verdicts
           WHERE audit_id = ? AND rule = ? AND slice = ? AND "group" = ? LIMIT 1""",
        [audit_id, rule, slice_name, group]).fetchone()
    return None if row is None else dict(zip(("estimate", "lower", "upper", "verdict"), row))


def _auroc(report: ChangeControlReport) -> tuple[float, float, float]:
    row = report.overall("auroc")
    return float(row["challenger"]), float(row["challenger_lower"]), float(row["challenger_upper"])


def tradeoff(con: duckdb.DuckDBPyConnection, candidate: ChangeControlReport, mitigated: ChangeControlReport,
             method: str, status: str, next_command: str | None, *, limit: int = 5) -> MitigatedTradeoff:
    """The mitigated challenger beside the candidate: AUROC and the candidate's problem groups, before/after."""
    targets = [(a.rule, g) for a in candidate.fairness.rules for g in a.failing]
    if not targets:
        targets = [(a.rule, g) for a in candidate.fairness.rules for g in a.insufficient_required]
    gaps = tuple(
        {"rule": rule, "group": group,
         "before": _verdict(con, candidate.fairness.challenger_audit_id, rule, group),
         "after": _verdict(con, mitigated.fairness.challenger_audit_id, rule, group)}
        for rule, group in targets[:limit])
    return MitigatedTradeoff(
        label=mitigated.challenger.label, base_label=candidate.challenger.label, method=method, status=status,
        next_command=next_command, candidate_auroc=_auroc(candidate), mitigated_auroc=_auroc(mitigated),
        recall_gaps=gaps,
    )

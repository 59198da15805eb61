"""The fairness gate as the registry reads it: one status per policy rule for one model version.

Built from the latest stored audit of the version (``monitoring.fairness_verdicts``). A rule's
status follows :mod:`clinical_mlops.core.evidence`: ``fail`` if any group's interval lies wholly
outside the bound; otherwise ``insufficient_evidence`` if any group that must be assessed lacks
evidence (or no group could be assessed at all); ``pass`` only on evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from clinical_mlops.core import evidence
from clinical_mlops.core.warehouse import table_exists

__all__ = ["FairnessGate", "GroupFinding", "RuleStatus", "rule_statuses"]


@dataclass(frozen=True)
class GroupFinding:
    """One group's verdict on one rule, as aggregates (no rows)."""

    slice: str
    group: str
    n: int
    estimate: float | None
    lower: float | None
    upper: float | None
    verdict: str
    reason: str

    def as_dict(self) -> dict:
        return {"slice": self.slice, "group": self.group, "n": self.n, "estimate": self.estimate,
                "ci": [self.lower, self.upper], "verdict": self.verdict, "reason": self.reason}


@dataclass(frozen=True)
class RuleStatus:
    rule: str
    severity: str
    blocking: bool
    status: evidence.Status
    reason: str
    failing: tuple[GroupFinding, ...] = ()
    insufficient_required: tuple[GroupFinding, ...] = ()
    """Groups the policy requires to be assessed whose evidence is insufficient."""
    not_assessable: tuple[GroupFinding, ...] = ()
    """Other groups without enough evidence: listed, acknowledged at promotion."""


@dataclass(frozen=True)
class FairnessGate:
    audit_id: str
    model_name: str
    model_version: str
    policy_sha256: str
    rules: tuple[RuleStatus, ...] = field(default=())

    def rule(self, name: str) -> RuleStatus | None:
        return next((r for r in self.rules if r.rule == name), None)

    @property
    def blocking(self) -> tuple[RuleStatus, ...]:
        return tuple(r for r in self.rules if r.blocking)


def _finding(row: tuple) -> GroupFinding:
    slice_, group, n, est, lo, hi, verdict, reason = row
    return GroupFinding(str(slice_), str(group), int(n), est, lo, hi, str(verdict), str(reason))


def rule_statuses(con: duckdb.DuckDBPyConnection, model_name: str, model_version: str) -> FairnessGate | None:
    """The latest audit of one model version as a status per rule; ``None`` when it was never audited."""
    if not table_exists(con, "monitoring.fairness_verdicts"):
        return None
    latest = con.execute(
        """SELECT audit_id, policy_sha256 FROM monitoring.fairness_verdicts
           WHERE model_name = ? AND model_version = ? ORDER BY evaluated_at DESC LIMIT 1""",
        [model_name, str(model_version)],
    ).fetchone()
    if latest is None:
        return None
    audit_id, policy_sha256 = latest
    rows = con.execute(
        """SELECT rule, severity, blocking, slice, "group", n, estimate, lower, upper, verdict, reason
           FROM monitoring.fairness_verdicts WHERE audit_id = ? ORDER BY rule, slice, "group" """,
        [audit_id],
    ).fetchall()
    by_rule: dict[str, list[tuple]] = {}
    for row in rows:
        by_rule.setdefault(row[0], []).append(row)
    statuses = []
    for rule, rule_rows in by_rule.items():
        findings = [_finding(r[3:]) for r in rule_rows]
        failing = tuple(f for f in findings if f.verdict == evidence.FAIL)
        insufficient = tuple(f for f in findings if f.verdict == evidence.INSUFFICIENT)
        status = evidence.combine(f.verdict for f in findings)
        if failing:
            reason = f"{len(failing)} group(s) outside the bound"
        elif status == evidence.INSUFFICIENT:
            reason = (f"no group could be assessed" if len(insufficient) == len(findings)
                      else f"{len(insufficient)} group(s) without sufficient evidence")
        else:
            reason = f"all {len(findings)} group(s) inside the bound"
        statuses.append(RuleStatus(rule, str(rule_rows[0][1]), bool(rule_rows[0][2]), status, reason,
                                   failing=failing, insufficient_required=insufficient))
    return FairnessGate(str(audit_id), model_name, str(model_version), str(policy_sha256), tuple(statuses))

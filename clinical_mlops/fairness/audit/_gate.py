"""The fairness gate as the registry reads it: one status per policy rule for one model version.

Built from the latest stored audit of the version (``monitoring.fairness_rule_outcomes`` names its
rules, ``monitoring.fairness_verdicts`` holds each group's verdict and whether the policy required
it). A rule's status is decided by the audit's own :func:`rule_evidence`: ``fail`` if any group's
interval lies wholly outside the bound; otherwise ``insufficient_evidence`` if any *required* group
lacks evidence, or no group could be assessed at all; ``pass`` only on evidence. Groups that are
not required and lack evidence are listed as ``not_assessable`` (acknowledged at promotion). A
verdict row stored before the ``required`` column existed counts as required (fail closed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import duckdb

from clinical_mlops.core import evidence
from clinical_mlops.core.warehouse import columns, table_exists
from clinical_mlops.fairness.audit._verdicts import group_label, rule_evidence

__all__ = ["FairnessGate", "GroupFinding", "RuleStatus", "gate_for_audit", "rule_statuses"]


def _number(value: object) -> float | None:
    if value is None:
        return None
    v = float(value)  # type: ignore[arg-type]
    return None if math.isnan(v) else v


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
    required: bool = True
    """Whether the policy requires this group to be assessed (listed, or at/above the population share)."""
    n_positive: int | None = None
    min_detectable_gap: float | None = None
    """Smallest recall drop detectable with 80 % power against the reference (required groups; else None)."""

    @property
    def label(self) -> str:
        return group_label(self.slice, self.group)

    def as_dict(self) -> dict:
        return {"slice": self.slice, "group": self.group, "n": self.n, "estimate": self.estimate,
                "ci": [self.lower, self.upper], "verdict": self.verdict, "reason": self.reason,
                "required": self.required, "n_positive": self.n_positive,
                "min_detectable_gap": self.min_detectable_gap}


@dataclass(frozen=True)
class RuleStatus:
    """One policy rule of one audit under the evidence rule."""

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
    policy_version: str | None = None

    def rule(self, name: str) -> RuleStatus | None:
        return next((r for r in self.rules if r.rule == name), None)

    @property
    def blocking(self) -> tuple[RuleStatus, ...]:
        return tuple(r for r in self.rules if r.blocking)

    @property
    def not_assessable(self) -> tuple[GroupFinding, ...]:
        """Groups not assessable under any rule (once each): what ``not_assessable_groups`` acknowledges."""
        seen: dict[tuple[str, str], GroupFinding] = {}
        for rule in self.rules:
            for f in rule.not_assessable:
                seen.setdefault((f.slice, f.group), f)
        return tuple(seen.values())


_VERDICT_FIELDS = ("rule", "severity", "blocking", "slice", "\"group\"", "n", "estimate", "lower", "upper",
                   "verdict", "reason")
_ADDED_FIELDS = ("required", "n_positive", "min_detectable_gap")


def _finding(row: tuple) -> GroupFinding:
    slice_, group, n, est, lo, hi, verdict, reason, required, n_pos, mdg = row
    return GroupFinding(str(slice_), str(group), int(n), _number(est), _number(lo), _number(hi), str(verdict),
                        str(reason), required=True if required is None else bool(required),
                        n_positive=None if n_pos is None else int(n_pos), min_detectable_gap=_number(mdg))


def _status(rule: str, severity: str, blocking: bool, findings: list[GroupFinding]) -> RuleStatus:
    judged = rule_evidence((f.label, f.verdict, f.required) for f in findings)
    insufficient = [f for f in findings if f.verdict == evidence.INSUFFICIENT]
    return RuleStatus(rule, severity, blocking, judged.status, judged.reason,
                      failing=tuple(f for f in findings if f.verdict == evidence.FAIL),
                      insufficient_required=tuple(f for f in insufficient if f.required),
                      not_assessable=tuple(f for f in insufficient if not f.required))


def gate_for_audit(con: duckdb.DuckDBPyConnection, audit_id: str) -> FairnessGate | None:
    """The gate of one stored audit (``None`` if the audit is unknown)."""
    have_outcomes = table_exists(con, "monitoring.fairness_rule_outcomes")
    have_verdicts = table_exists(con, "monitoring.fairness_verdicts")
    head, declared = None, []
    if have_outcomes:
        declared = con.execute(
            """SELECT rule, severity, blocking, model_name, model_version, policy_sha256, policy_version
               FROM monitoring.fairness_rule_outcomes WHERE audit_id = ? ORDER BY rule""", [audit_id]).fetchall()
        head = declared[0][3:] if declared else None
    rows: list[tuple] = []
    if have_verdicts:
        present = set(columns(con, "monitoring.fairness_verdicts"))
        added = [c if c in present else f"NULL AS {c}" for c in _ADDED_FIELDS]
        version = "policy_version" if "policy_version" in present else "NULL AS policy_version"
        rows = con.execute(
            f"""SELECT {", ".join(_VERDICT_FIELDS + tuple(added))}, model_name, model_version, policy_sha256, {version}
                FROM monitoring.fairness_verdicts WHERE audit_id = ? ORDER BY rule, slice, "group" """,
            [audit_id]).fetchall()
        if head is None and rows:
            head = rows[0][14:]
    if head is None:
        return None
    rules: dict[str, tuple[str, bool]] = {r[0]: (str(r[1]), bool(r[2])) for r in declared}
    findings: dict[str, list[GroupFinding]] = {}
    for row in rows:
        rules.setdefault(row[0], (str(row[1]), bool(row[2])))
        findings.setdefault(row[0], []).append(_finding(row[3:14]))
    statuses = tuple(_status(rule, severity, blocking, findings.get(rule, []))
                     for rule, (severity, blocking) in sorted(rules.items()))
    model_name, model_version, sha, policy_version = head
    return FairnessGate(str(audit_id), str(model_name), str(model_version), str(sha), statuses,
                        policy_version=None if policy_version is None else str(policy_version))


def rule_statuses(con: duckdb.DuckDBPyConnection, model_name: str, model_version: str) -> FairnessGate | None:
    """The latest audit of one model version as a status per rule; ``None`` when it was never audited."""
    sources = [t for t in ("monitoring.fairness_rule_outcomes", "monitoring.fairness_verdicts") if table_exists(con, t)]
    if not sources:
        return None
    union = " UNION ALL ".join(f"SELECT audit_id, evaluated_at FROM {t} WHERE model_name = ? AND model_version = ?"
                               for t in sources)
    latest = con.execute(f"SELECT audit_id FROM ({union}) ORDER BY evaluated_at DESC LIMIT 1",
                         [v for _ in sources for v in (model_name, str(model_version))]).fetchone()
    return None if latest is None else gate_for_audit(con, str(latest[0]))

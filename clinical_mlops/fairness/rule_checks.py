"""The fairness report's asset checks, decided here as plain data: one per declared policy rule.

Each :class:`RuleCheck` follows the evidence rule (:mod:`clinical_mlops.core.evidence`): passed
only on ``pass``; ``insufficient_evidence`` is a failed check, and so is a declared rule missing
from the policy the run used (there is no evidence for it). A blocking rule's check is ERROR,
any other WARN. The Dagster wiring (:mod:`clinical_mlops.defs.fairness.assets`) only maps each
one onto an ``AssetCheckResult`` (:func:`clinical_mlops.defs.checks.evidence_check`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clinical_mlops.core import evidence
from clinical_mlops.fairness.audit import FairnessAudit, RuleOutcome
from clinical_mlops.fairness.report import shown_count
from clinical_mlops.governance.policy import MetricRule, Policy

__all__ = ["RuleCheck", "required_groups", "rule_checks"]


@dataclass(frozen=True)
class RuleCheck:
    """One declared rule's check result, as plain data."""

    check_name: str
    evidence: evidence.Evidence
    """Its status (passed only on ``pass``) and the reason."""
    blocking: bool
    """ERROR severity when true, WARN otherwise."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """In order; lists and dicts are JSON metadata, everything else a plain value."""
    description: str | None = None
    """None: the evidence's reason."""


def required_groups(result: FairnessAudit) -> list[dict]:
    """Each required group with its counts (small cells suppressed) and minimum detectable recall gap (80 % power)."""
    out = []
    for r in result.required_groups().itertuples(index=False):
        gap = float(r.min_detectable_gap)
        out.append({"slice": r.slice, "group": r.group, "n": shown_count(r.n), "n_positive": shown_count(r.n_positive),
                    "reference_n_positive": shown_count(r.reference_n_positive),
                    "min_detectable_gap": None if gap != gap else round(gap, 4)})
    return out


def _group_text(g: dict) -> str:
    gap = g.get("min_detectable_gap")
    mdg = f"min detectable gap {gap:.3f}" if gap is not None else "min detectable gap: none, no drop is detectable at this size"
    return f"{g['slice']}={g['group']} (n={g['n']}, positives={g['n_positive']}, {mdg})"


def _description(rule: MetricRule, outcome: RuleOutcome) -> str:
    if outcome.status == evidence.FAIL:
        return "; ".join(f"{e['slice']}={e['group']}: {e['estimate']:+.3f} CI [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]"
                         for e in outcome.evidence(5))
    listed = len(outcome.not_assessable)
    tail = f"; {listed} group(s) not assessable (listed, need an acknowledgement at promotion)" if listed else ""
    if outcome.status == evidence.INSUFFICIENT:
        missing = outcome.required_evidence()
        if missing:
            return "required group(s) without sufficient evidence: " + "; ".join(map(_group_text, missing)) + tail
        return outcome.reason
    return f"every assessed group's interval lies inside the bound ({rule.describe()}){tail}"


def rule_checks(result: FairnessAudit, declared: Policy, incident_by_rule: Mapping[str, Any]) -> tuple[RuleCheck, ...]:
    """One check per rule of ``declared`` (the rules the asset declares checks for), judged on ``result``;
    ``incident_by_rule``: rule name → the incident its failure opened (its id and owner go in the metadata)."""
    checks = []
    active = {r.name for r in result.rules}
    groups = required_groups(result)
    for rule in declared.fairness.metrics:
        if rule.name not in active:
            missing = evidence.Evidence(evidence.INSUFFICIENT, f"rule {rule.name} is not in the policy used for this "
                                                               f"run (sha256 {result.policy_sha256[:12]})")
            checks.append(RuleCheck(rule.check_name, missing, rule.blocking, {
                "policy_version": result.policy_version, "policy_sha256": result.policy_sha256,
                "severity_in_policy": rule.severity}))
            continue
        outcome = result.outcome(rule.name)
        metadata = {
            "policy_version": result.policy_version,
            "policy_sha256": result.policy_sha256,
            "bound": rule.describe(),
            "severity_in_policy": rule.severity,
            "status": outcome.status,
            "groups_pass": outcome.counts["pass"],
            "groups_fail": outcome.counts["fail"],
            "groups_insufficient_evidence": outcome.counts["insufficient_evidence"],
            "failing_groups": outcome.evidence(),
            "insufficient_required_groups": outcome.required_evidence(),
            "not_assessable_groups": outcome.not_assessable_evidence(),
            "required_groups": groups,
        }
        if rule.name in incident_by_rule:
            metadata["incident_id"] = incident_by_rule[rule.name].incident_id
            metadata["incident_owner"] = incident_by_rule[rule.name].owner
        checks.append(RuleCheck(rule.check_name, outcome.as_evidence, rule.blocking, metadata,
                                _description(rule, outcome)))
    return tuple(checks)

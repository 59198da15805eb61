"""Fairness on labelled production predictions: the held-out audit's code, stored as ``model_role = 'production'``.

Each policy rule is judged like the offline gate: per group, the audit's interval verdict
(:func:`clinical_mlops.fairness.audit.verdict_for`); per rule, :func:`clinical_mlops.core.evidence.combine`
of its groups — any group wholly outside the bound fails, otherwise any group without enough evidence
(or no group at all) is insufficient evidence, and only evidence for every group passes. With no
labelled outcome in the window every rule is insufficient evidence, never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from clinical_mlops.core import evidence
from clinical_mlops.fairness import audit as fairness
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring import settings
from clinical_mlops.monitoring.production._outcomes import labelled_predictions, no_labels_reason
from clinical_mlops.monitoring.production._performance import latest_threshold
from clinical_mlops.monitoring.production._tables import utc_now

__all__ = ["ProductionFairness", "RuleEvidence", "production_fairness"]


@dataclass(frozen=True)
class RuleEvidence:
    """One policy rule on production predictions: its status and why, with per-verdict counts and the
    failing groups (aggregates only)."""

    rule: str
    evidence: evidence.Evidence
    counts: dict[str, int] = field(default_factory=dict)
    failing: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ProductionFairness:
    model: tuple[str, str] | None
    n: int
    audit: fairness.FairnessAudit | None
    audit_id: str | None
    reason: str = ""

    def rule_evidence(self, rule_name: str) -> RuleEvidence:
        """The rule's status under the one evidence rule (insufficient without an audit or without the rule)."""
        if self.audit is None:
            return RuleEvidence(rule_name, evidence.Evidence(evidence.INSUFFICIENT, self.reason))
        if rule_name not in {r.name for r in self.audit.rules}:
            return RuleEvidence(rule_name, evidence.Evidence(
                evidence.INSUFFICIENT, f"{rule_name} is not in the policy used for this run: not assessed"))
        verdicts = self.audit.verdicts.loc[self.audit.verdicts["rule"] == rule_name, "verdict"]
        status = evidence.combine(verdicts)
        total = len(verdicts)
        counts = {status_: int((verdicts == status_).sum()) for status_ in evidence.STATUSES}
        if status == evidence.FAIL:
            reason = f"{counts['fail']} of {total} group(s) outside the bound in production"
        elif status == evidence.INSUFFICIENT:
            reason = ("no group could be assessed in production" if counts["insufficient_evidence"] == total
                      else f"{counts['insufficient_evidence']} of {total} group(s) without sufficient evidence "
                      "in production")
        else:
            reason = f"all {total} group(s) inside the bound in production"
        return RuleEvidence(rule_name, evidence.Evidence(status, f"{rule_name}: {reason} (n={self.n})"),
                            counts, self.audit.outcome(rule_name).evidence())


def production_fairness(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    policy,
    window_days: float = settings.PRODUCTION_WINDOW_DAYS,
    n_bootstrap: int | None = None,
    now: datetime | None = None,
    store: bool = True,
) -> ProductionFairness:
    """The policy's fairness audit on the current model's labelled production predictions."""
    now = now or utc_now()
    frame = labelled_predictions(con, spec.name, since=now - timedelta(days=window_days),
                                 attributes=tuple(spec.sensitive_attributes))
    if frame.empty:
        return ProductionFairness(None, 0, None, None, no_labels_reason(window_days))
    last = frame.iloc[-1]
    model = (str(last["model_name"]), str(last["model_version"]))
    part = frame[(frame["model_name"] == model[0]) & (frame["model_version"] == model[1])].reset_index(drop=True)
    for attribute in policy.fairness.attribute_names:
        if attribute in part.columns:
            part[attribute] = part[attribute].fillna("Unknown")
    result = fairness.audit(part, threshold=latest_threshold(part), policy=policy, n_bootstrap=n_bootstrap)
    audit_id = None
    if store:
        audit_id = fairness.store_audit(con, result, cohort=spec.name, model_name=model[0], model_version=model[1],
                                        model_role="production", evaluated_at=now)
    return ProductionFairness(model, len(part), result, audit_id)

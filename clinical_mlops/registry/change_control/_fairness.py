"""The fairness evidence of a challenger, against its champion, as change control judges it.

Read from the fairness audits (:func:`clinical_mlops.fairness.audit.rule_statuses`), never
recomputed or assumed: a version without an audit, or audited under another policy, has no
fairness evidence (``insufficient_evidence`` that a waiver cannot replace: the audit has to run).
For each blocking rule the challenger's status is the audit's, except for a failure the champion
shares: that one is judged by non-inferiority on the paired bootstrap — the challenger's gap
minus the champion's (oriented so that negative is worse) must have its lower bound at or above
``-margin`` (pass); an upper bound below ``-margin`` is a fail; anything else is insufficient.
A failure the champion does not have is a plain fail. Open incidents of the rule are named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core import bootstrap, evidence
from clinical_mlops.core.warehouse import table_exists
from clinical_mlops.fairness.audit import INTERSECTION_SEPARATOR, MISSING_GROUP, FairnessGate, rule_statuses
from clinical_mlops.governance.policy import DEFAULT_NON_INFERIORITY_MARGIN, MetricRule, Policy
from clinical_mlops.monitoring.incidents import OPEN_STATUSES
from clinical_mlops.registry.change_control._diff import ModelDescription
from clinical_mlops.registry.change_control._paired import PAIRED_METRICS, PairedResult, paired_bootstrap

__all__ = [
    "ASSESSED",
    "DEFAULT_NON_INFERIORITY_MARGIN",
    "NOT_ASSESSED",
    "OTHER_POLICY",
    "FairnessComparison",
    "RuleAssessment",
    "SliceSampler",
    "compare_fairness",
    "non_inferiority_margin",
    "open_incidents",
]

ASSESSED, NOT_ASSESSED, OTHER_POLICY = "fairness_audit", "not_assessed", "other_policy"

_M = {m: k for k, m in enumerate(PAIRED_METRICS)}


def _diff(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda g, r: g[..., _M[metric]] - r[..., _M[metric]]


def _ratio(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def ratio(g: np.ndarray, r: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return g[..., _M[metric]] / r[..., _M[metric]]
    return ratio


def _eod(g: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.fmax(np.abs(_diff("recall")(g, r)), np.abs(_diff("fpr")(g, r)))


PAIRED_GAPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "recall_gap": _diff("recall"), "fpr_gap": _diff("fpr"), "auroc_gap": _diff("auroc"),
    "demographic_parity_difference": _diff("alert_rate"), "equalized_odds_difference": _eod,
    "recall_ratio": _ratio("recall"), "demographic_parity_ratio": _ratio("alert_rate"),
}
"""Disparities the paired bootstrap can recompute for both models on the same resamples."""


def non_inferiority_margin(policy: Policy) -> float:
    """``change_control.acceptance.fairness_non_inferiority_margin``, or the documented default."""
    return float(policy.change_control.acceptance.fairness_non_inferiority_margin)


@dataclass(frozen=True)
class RuleAssessment:
    """One blocking rule for the challenger: status, reason, and the groups behind it (aggregates)."""

    rule: str
    status: evidence.Status
    reason: str
    failing: tuple[str, ...] = ()
    """The challenger's failing groups, ``slice=group``."""
    new_failures: tuple[str, ...] = ()
    """Failing groups the champion does not fail (each a plain fail)."""
    shared: tuple[dict, ...] = ()
    """Per failing group the champion shares: the gaps, the paired difference and its interval, a status."""
    insufficient_required: tuple[str, ...] = ()
    incidents: tuple[str, ...] = ()
    """Open incidents of this rule for the cohort."""


@dataclass(frozen=True)
class FairnessComparison:
    source: str  # fairness_audit | not_assessed | other_policy
    reason: str = ""
    challenger_audit_id: str | None = None
    champion_audit_id: str | None = None
    rules: tuple[RuleAssessment, ...] = ()
    not_assessable: tuple[str, ...] = ()
    """Groups the audit could not assess (listed; their acknowledgement is a waiver)."""
    champion_failures: tuple[str, ...] = ()
    challenger_failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    margin: float = DEFAULT_NON_INFERIORITY_MARGIN

    @property
    def assessed(self) -> bool:
        return self.source == ASSESSED

    @property
    def new_failures(self) -> tuple[str, ...]:
        return tuple(f for f in self.challenger_failures if f not in set(self.champion_failures))

    @property
    def resolved(self) -> tuple[str, ...]:
        return tuple(f for f in self.champion_failures if f not in set(self.challenger_failures))

    @property
    def incidents(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i for r in self.rules for i in r.incidents))

    def as_dict(self) -> dict:
        return {**asdict(self), "new_failures": list(self.new_failures)}

    @classmethod
    def from_dict(cls, raw: Mapping) -> FairnessComparison:
        def tuples(d: Mapping) -> dict:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        known = {f for f in cls.__dataclass_fields__}
        raw = {k: v for k, v in raw.items() if k in known}  # a report stored before a field changed still loads
        rules = tuple(RuleAssessment(**tuples(r)) for r in raw.get("rules", ()))
        return cls(**{**tuples(raw), "rules": rules})


@dataclass
class SliceSampler:
    """Paired bootstrap replicates of both models per slice, on the same held-out rows and seed."""

    y: np.ndarray
    scores: list[np.ndarray]
    thresholds: list[float]
    frame: pd.DataFrame
    n_boot: int
    seed: int
    confidence: float
    min_group_size: int
    base: PairedResult
    _cache: dict[str, PairedResult] = field(default_factory=dict)

    def result(self, slice_name: str) -> PairedResult | None:
        if any(k[0] == slice_name for k in self.base.replicates):
            return self.base
        columns = slice_name.split(INTERSECTION_SEPARATOR)
        if any(c not in self.frame.columns for c in columns):
            return None
        if slice_name not in self._cache:
            text = self.frame[columns].astype("object").fillna(MISSING_GROUP).astype(str)
            values = text.agg(INTERSECTION_SEPARATOR.join, axis=1).to_numpy()
            self._cache[slice_name] = paired_bootstrap(
                self.y, self.scores, self.thresholds, {slice_name: values}, n_boot=self.n_boot, seed=self.seed,
                confidence=self.confidence, min_group_size=self.min_group_size)
        return self._cache[slice_name]


def _reference(policy: Policy, slice_name: str) -> str | None:
    try:
        return INTERSECTION_SEPARATOR.join(policy.fairness.attribute(a).reference
                                           for a in slice_name.split(INTERSECTION_SEPARATOR))
    except KeyError:
        return None


def _harm(rule: MetricRule, gap: np.ndarray) -> np.ndarray:
    """The gap oriented so that larger is worse."""
    if rule.kind == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.fmin(gap, 1.0 / gap)
    return -gap if rule.direction == "lower" else np.abs(gap)


def _points(table: pd.DataFrame, slice_name: str, group: str) -> np.ndarray | None:
    rows = table[(table["attribute"] == slice_name) & (table["group"] == group)].set_index("metric")
    if rows.empty:
        return None
    return np.stack([rows.loc[list(PAIRED_METRICS), col].to_numpy(dtype=float) for col in ("champion", "challenger")])


def _non_inferiority(sampler: SliceSampler, policy: Policy, rule: MetricRule, slice_name: str, group: str,
                     margin: float) -> dict:
    """Challenger gap − champion gap (negative: worse) for one shared failing group, with its interval."""
    label = f"{slice_name}={group}"
    out = {"group": label, "challenger_gap": None, "champion_gap": None, "delta": None, "lower": None, "upper": None}
    gap_of = PAIRED_GAPS.get(rule.name)
    reference = _reference(policy, slice_name)
    result = sampler.result(slice_name) if gap_of is not None and reference is not None else None
    reps = None if result is None else (result.replicates.get((slice_name, group)),
                                        result.replicates.get((slice_name, reference)))
    if gap_of is None:
        return {**out, "status": evidence.INSUFFICIENT, "reason": f"{rule.name} has no paired estimate here"}
    if reps is None or reps[0] is None or reps[1] is None:
        return {**out, "status": evidence.INSUFFICIENT,
                "reason": f"{label}: no paired replicates (group or reference under the minimum size)"}
    points_g, points_r = _points(result.table, slice_name, group), _points(result.table, slice_name, reference)
    point = gap_of(points_g, points_r)
    delta = _harm(rule, gap_of(reps[0], reps[1]))
    delta = delta[:, 0] - delta[:, 1]  # champion's harm − challenger's harm = challenger gap − champion gap
    delta = delta[np.isfinite(delta)]
    if delta.size == 0:
        return {**out, "status": evidence.INSUFFICIENT, "reason": f"{label}: the paired gap is undefined"}
    lower, upper = (float(v) for v in bootstrap.percentile_interval(delta, sampler.confidence))
    estimate = float(_harm(rule, point)[0] - _harm(rule, point)[1])
    status = evidence.at_least(lower, upper, -margin).status  # pass: lower ≥ −margin; fail: upper < −margin
    reason = {evidence.PASS: "not worse than the champion's", evidence.FAIL: "worse than the champion's",
              evidence.INSUFFICIENT: "not shown to be no worse than the champion's"}[status]
    return {**out, "challenger_gap": float(point[1]), "champion_gap": float(point[0]), "delta": estimate,
            "lower": lower, "upper": upper, "status": status,
            "reason": f"{label}: gap {reason} (difference {estimate:+.3f}, paired CI {lower:+.3f} to {upper:+.3f}, "
                      f"margin −{margin:g})"}


def open_incidents(con: duckdb.DuckDBPyConnection, cohort: str, rule: str) -> tuple[str, ...]:
    """Ids of the open incidents of one fairness rule for a cohort (oldest first)."""
    if not table_exists(con, "monitoring.incidents"):
        return ()
    rows = con.execute(
        f"""SELECT incident_id FROM monitoring.incidents
            WHERE cohort = ? AND status IN ({', '.join('?' * len(OPEN_STATUSES))})
              AND ("check" LIKE ? OR "check" LIKE ?) ORDER BY opened_at""",
        [cohort, *OPEN_STATUSES, f"%:{rule}_within_policy", f"%:{rule}"],
    ).fetchall()
    return tuple(r[0] for r in rows)


def _label(finding) -> str:
    return f"{finding.slice}={finding.group}"


def _failures(gate: FairnessGate | None, rules: tuple[MetricRule, ...]) -> set[tuple[str, str]]:
    if gate is None:
        return set()
    return {(r.rule, _label(f)) for r in gate.rules if r.rule in {x.name for x in rules} for f in r.failing}


def compare_fairness(con: duckdb.DuckDBPyConnection, policy: Policy, cohort: str, champion: ModelDescription | None,
                     challenger: ModelDescription, sampler: SliceSampler | None) -> FairnessComparison:
    """The challenger's blocking fairness rules from its audit, shared failures judged against the champion.

    ``sampler`` gives paired replicates with the champion first (None when there is no champion).
    """
    margin = non_inferiority_margin(policy)
    rules = policy.fairness.blocking_metrics
    gate = rule_statuses(con, challenger.name, challenger.version)
    if gate is None:
        return FairnessComparison(NOT_ASSESSED, f"fairness was never assessed for {challenger.label}: "
                                  f"materialize {cohort}/fairness_report", margin=margin)
    if gate.policy_sha256 != policy.sha256:
        return FairnessComparison(OTHER_POLICY, f"the fairness audit of {challenger.label} was made under policy "
                                  f"{gate.policy_sha256[:12]}, not the policy in force ({policy.sha256[:12]}): "
                                  f"re-materialize {cohort}/fairness_report", challenger_audit_id=gate.audit_id,
                                  margin=margin)
    notes = []
    champion_gate = None
    if champion is not None:
        champion_gate = rule_statuses(con, champion.name, champion.version)
        if champion_gate is None or champion_gate.policy_sha256 != policy.sha256:
            notes.append(f"the champion {champion.label} has no fairness audit under this policy: "
                         "every challenger failure counts as new")
            champion_gate = None
    champion_failing = _failures(champion_gate, rules)
    shared_allowed = champion is not None and bool(policy.change_control.acceptance.no_new_fairness_failures)
    assessments, not_assessable = [], []
    for rule in rules:
        status = gate.rule(rule.name)
        incidents = open_incidents(con, cohort, rule.name)
        if status is None:
            assessments.append(RuleAssessment(rule.name, evidence.INSUFFICIENT,
                                              f"the audit {gate.audit_id[:12]} has no verdict for {rule.name}",
                                              incidents=incidents))
            continue
        not_assessable += [f"{rule.name}: {_label(f)} (n={f.n})" for f in status.not_assessable]
        failing = tuple(_label(f) for f in status.failing)
        required = tuple(_label(f) for f in status.insufficient_required)
        new = tuple(g for g in failing if not shared_allowed or (rule.name, g) not in champion_failing)
        shared = tuple(
            _non_inferiority(sampler, policy, rule, *g.split("=", 1), margin) if sampler is not None else
            {"group": g, "status": evidence.INSUFFICIENT, "reason": "no paired comparison"}
            for g in failing if g not in new)
        if new:
            verdict, reason = evidence.FAIL, f"{', '.join(new)} outside the bound ({status.reason})"
            if champion is not None and shared_allowed:
                reason += "; a failure the champion does not have"
        elif shared:
            verdict = evidence.combine([*(s["status"] for s in shared),
                                        evidence.INSUFFICIENT if required else evidence.PASS])
            reason = "shared with the champion — " + "; ".join(s["reason"] for s in shared)
            if required:
                reason += f"; no evidence for {', '.join(required)}"
        else:
            verdict, reason = status.status, status.reason
            if required and status.status == evidence.INSUFFICIENT:
                reason += f": {', '.join(required)}"
        if incidents and verdict != evidence.PASS:
            reason += f"; open incident {', '.join(incidents)}"
        assessments.append(RuleAssessment(rule.name, verdict, reason, failing, new, shared, required, incidents))
    return FairnessComparison(
        ASSESSED, f"audit {gate.audit_id[:12]} of {challenger.label}", challenger_audit_id=gate.audit_id,
        champion_audit_id=None if champion_gate is None else champion_gate.audit_id, rules=tuple(assessments),
        not_assessable=tuple(not_assessable),
        champion_failures=tuple(sorted(f"{r}:{g}" for r, g in champion_failing)),
        challenger_failures=tuple(sorted(f"{a.rule}:{g}" for a in assessments for g in a.failing)),
        notes=tuple(notes), margin=margin,
    )

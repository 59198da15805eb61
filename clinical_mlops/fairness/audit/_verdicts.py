"""Verdicts against the policy, and the audit's result: pass only on evidence, never for a small group."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from clinical_mlops.fairness.audit._group_metrics import NONNEGATIVE_DISPARITIES
from clinical_mlops.governance.policy import MetricRule

__all__ = ["VERDICTS", "FairnessAudit", "RuleOutcome", "verdict_for"]

VERDICTS: tuple[str, ...] = ("pass", "fail", "insufficient_evidence")


@dataclass(frozen=True)
class RuleOutcome:
    """How one policy metric fared across all groups: the basis of one asset check."""

    rule: MetricRule
    failing: pd.DataFrame  # verdict rows with verdict == "fail"
    counts: dict[str, int]

    @property
    def passed(self) -> bool:
        return self.failing.empty

    def evidence(self, limit: int = 10) -> list[dict]:
        rows = self.failing.sort_values("estimate", key=lambda s: -s.abs()).head(limit)
        return [
            {
                "slice": r.slice, "group": r.group, "reference": r.reference, "n": int(r.n),
                "estimate": round(float(r.estimate), 4),
                "ci": [round(float(r.lower), 4), round(float(r.upper), 4)],
                "bound": r.bound,
            }
            for r in rows.itertuples(index=False)
        ]


@dataclass(frozen=True)
class FairnessAudit:
    """Everything one audit found; all tables are aggregates per group."""

    groups: pd.DataFrame
    disparities: pd.DataFrame
    verdicts: pd.DataFrame
    threshold: float
    n: int
    n_positive: int
    policy_sha256: str
    policy_version: str
    confidence: float
    n_bootstrap: int
    seed: int
    correction: str
    rules: tuple[MetricRule, ...] = field(default=())
    bootstrap_method: str = "rows"
    """``rows`` (count weights per row) or ``binned`` (multinomial cell counts, see core.bootstrap)."""
    score_bins: int | None = None
    """Score quantile bins of a binned bootstrap (None for ``rows``)."""
    exact_max_rows: int | None = None
    """The size above which the bootstrap is binned."""

    def outcome(self, rule_name: str) -> RuleOutcome:
        rule = next(r for r in self.rules if r.name == rule_name)
        rows = self.verdicts[self.verdicts["rule"] == rule_name]
        counts = {v: int((rows["verdict"] == v).sum()) for v in VERDICTS}
        return RuleOutcome(rule=rule, failing=rows[rows["verdict"] == "fail"], counts=counts)

    def outcomes(self) -> list[RuleOutcome]:
        return [self.outcome(r.name) for r in self.rules]

    @property
    def verdict_counts(self) -> dict[str, int]:
        return {v: int((self.verdicts["verdict"] == v).sum()) for v in VERDICTS}

    @property
    def failing(self) -> pd.DataFrame:
        return self.verdicts[self.verdicts["verdict"] == "fail"]

    @property
    def blocking_failed(self) -> bool:
        return bool(self.failing["blocking"].any()) if not self.failing.empty else False

    def disparity(self, slice_name: str, group: str, metric: str) -> dict[str, float] | None:
        rows = self.disparities[
            (self.disparities["slice"] == slice_name) & (self.disparities["group"] == group)
            & (self.disparities["metric"] == metric)
        ]
        if rows.empty:
            return None
        r = rows.iloc[0]
        return {"estimate": float(r["estimate"]), "lower": float(r["lower"]), "upper": float(r["upper"])}


def verdict_for(rule: MetricRule, metric: str, est: float, lo: float, hi: float, n: int, ref_n: int,
                min_group_size: int) -> tuple[str, str]:
    """``(verdict, reason)`` of one disparity: fail or pass only when the whole interval says so."""
    if n < min_group_size:
        return "insufficient_evidence", f"group n={n} is below min_group_size={min_group_size}"
    if ref_n < min_group_size:
        return "insufficient_evidence", f"reference group n={ref_n} is below min_group_size={min_group_size}"
    if any(math.isnan(v) for v in (est, lo, hi)):
        return "insufficient_evidence", "metric undefined for this group (no positives, negatives or alerts)"
    if rule.kind == "ratio":
        low, high = rule.bound, 1.0 / rule.bound
        if hi < low or lo > high:
            return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely outside [{low:.3f}, {high:.3f}]"
        if lo >= low and hi <= high:
            return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies within [{low:.3f}, {high:.3f}]"
        return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound {rule.bound:g}"
    b = rule.bound
    if metric in NONNEGATIVE_DISPARITIES:
        if lo > b:
            return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely above {b:g}"
        if hi <= b:
            return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies within [0, {b:g}]"
        return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound {b:g}"
    if rule.direction == "lower":  # only a group worse than the reference breaches
        if hi < -b:
            return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely below -{b:g}"
        if lo >= -b:
            return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies above -{b:g}"
        return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound -{b:g}"
    if lo > b or hi < -b:
        return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely outside ±{b:g}"
    if lo >= -b and hi <= b:
        return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies within ±{b:g}"
    return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound ±{b:g}"


"""Verdicts against the policy, and the audit's result: pass only on evidence, never for a small group.

A rule's status (:func:`rule_evidence`, the one place it is decided; the gate the registry reads
uses it too): ``fail`` if any group's interval lies wholly outside the bound; else
``insufficient_evidence`` if any *required* group lacks evidence, or if no group could be assessed
at all; else ``pass``. Other groups without evidence are *not assessable*: listed, acknowledged at
promotion, not blocking by themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from clinical_mlops.core import evidence
from clinical_mlops.fairness.audit._group_metrics import NONNEGATIVE_DISPARITIES
from clinical_mlops.governance.policy import MetricRule

__all__ = ["SMALL_CELL", "VERDICTS", "FairnessAudit", "RuleOutcome", "group_label", "rule_evidence", "verdict_for"]

VERDICTS: tuple[str, ...] = ("pass", "fail", "insufficient_evidence")
SMALL_CELL = 11
"""Groups with fewer rows than this show counts only, no rates (small-cell suppression)."""


def group_label(slice_name: str, group: str) -> str:
    return f"{slice_name}={group}"


def _names(labels: list[str], limit: int = 5) -> str:
    more = len(labels) - limit
    return ", ".join(labels[:limit]) + (f" and {more} more" if more > 0 else "")


def rule_evidence(findings: Iterable[tuple[str, str, bool]]) -> evidence.Evidence:
    """A rule's status from its groups' ``(label, verdict, required)``, with the reason in words."""
    rows = list(findings)
    failing = [label for label, verdict, _ in rows if verdict == evidence.FAIL]
    missing = [label for label, verdict, required in rows if verdict == evidence.INSUFFICIENT and required]
    passing = [label for label, verdict, _ in rows if verdict == evidence.PASS]
    listed = len(rows) - len(failing) - len(missing) - len(passing)
    if failing:
        return evidence.Evidence(evidence.FAIL, f"{len(failing)} group(s) with the whole interval outside the bound: "
                                                f"{_names(failing)}")
    if missing:
        return evidence.Evidence(evidence.INSUFFICIENT, f"required group(s) without sufficient evidence: "
                                                        f"{_names(missing)}")
    if not passing:
        return evidence.Evidence(evidence.INSUFFICIENT, "no group could be assessed" + (
            f" (all {len(rows)} lack sufficient evidence)" if rows else " (no group besides the reference)"))
    note = f"; {listed} group(s) not assessable (listed, not blocking)" if listed else ""
    return evidence.Evidence(evidence.PASS, f"all {len(passing)} assessed group(s) lie inside the bound{note}")


def _required(rows: pd.DataFrame) -> pd.Series:
    """The ``required`` flags; rows without one (older audits) count as required: fail closed."""
    if "required" not in rows:
        return pd.Series(True, index=rows.index)
    return rows["required"].astype("boolean").fillna(True).astype(bool)


@dataclass(frozen=True)
class RuleOutcome:
    """How one policy metric fared across all groups: the basis of one asset check.

    ``status`` follows :func:`rule_evidence`: ``passed`` is true only on ``pass``.
    """

    rule: MetricRule
    status: evidence.Status
    reason: str
    failing: pd.DataFrame  # verdict rows with verdict == "fail"
    counts: dict[str, int]
    insufficient_required: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Verdict rows of required groups without sufficient evidence (they block)."""
    not_assessable: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Verdict rows of other groups without sufficient evidence (listed; acknowledged at promotion)."""

    @classmethod
    def of(cls, rule: MetricRule, rows: pd.DataFrame) -> RuleOutcome:
        required = _required(rows)
        insufficient = rows["verdict"] == evidence.INSUFFICIENT
        judged = rule_evidence(zip((group_label(s, g) for s, g in zip(rows["slice"], rows["group"])),
                                   rows["verdict"], required))
        return cls(rule=rule, status=judged.status, reason=judged.reason, failing=rows[rows["verdict"] == "fail"],
                   counts={v: int((rows["verdict"] == v).sum()) for v in VERDICTS},
                   insufficient_required=rows[insufficient & required], not_assessable=rows[insufficient & ~required])

    @property
    def passed(self) -> bool:
        return self.status == evidence.PASS

    @property
    def as_evidence(self) -> evidence.Evidence:
        return evidence.Evidence(self.status, self.reason)

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

    def required_evidence(self) -> list[dict]:
        """Required groups lacking evidence: counts, the minimum detectable recall gap and why."""
        return [
            {"slice": r.slice, "group": r.group, "n": _count(r.n), "n_positive": _count(getattr(r, "n_positive", None)),
             "min_detectable_gap": _rounded(getattr(r, "min_detectable_gap", None)), "reason": r.reason}
            for r in self.insufficient_required.itertuples(index=False)
        ]

    def not_assessable_evidence(self) -> list[dict]:
        """Groups listed as not assessable (counts below :data:`SMALL_CELL` suppressed)."""
        return [{"slice": r.slice, "group": r.group, "n": _count(r.n), "reason": r.reason}
                for r in self.not_assessable.itertuples(index=False)]


def _rounded(value: object, digits: int = 4) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else round(v, digits)


def _count(value: object) -> int | str | None:
    """A group count as shown outside the warehouse: below :data:`SMALL_CELL` only as ``<11``."""
    v = _rounded(value, 0)
    if v is None:
        return None
    return int(v) if v >= SMALL_CELL or v == 0 else f"<{SMALL_CELL}"


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
        return RuleOutcome.of(rule, self.verdicts[self.verdicts["rule"] == rule_name])

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

    @property
    def blocking_status(self) -> evidence.Status:
        """The blocking rules' statuses combined (insufficient when there is no blocking rule)."""
        return evidence.combine(o.status for o in self.outcomes() if o.rule.blocking)

    def required_groups(self) -> pd.DataFrame:
        """One row per required group: slice, group, n, positives, reference positives, minimum detectable gap."""
        v = self.verdicts
        cols = ["slice", "group", "reference", "n", "n_positive", "reference_n_positive", "min_detectable_gap"]
        if "required" not in v:
            return pd.DataFrame(columns=cols)
        return v[v["required"].astype(bool)].drop_duplicates(["slice", "group"])[cols].reset_index(drop=True)

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
    if n == 0:
        return "insufficient_evidence", "group absent from the data"
    if ref_n == 0:
        return "insufficient_evidence", "reference group absent from the data"
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


"""The promotion decision under the policy's acceptance criteria."""

from __future__ import annotations

import json
from dataclasses import dataclass

from clinical_mlops.governance.policy import Policy
from clinical_mlops.registry.change_control._report import ChangeControlReport

__all__ = ["Criterion", "Decision", "decide"]


@dataclass(frozen=True)
class Criterion:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    mode: str  # champion_comparison | absolute | already_champion
    criteria: tuple[Criterion, ...]
    modification_kinds: tuple[str, ...]
    policy_sha256: str
    policy_version: str

    @property
    def failed(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if not c.passed)

    @property
    def summary(self) -> str:
        if self.mode == "already_champion":
            return "the challenger is already the champion"
        if self.passed:
            return "acceptance criteria met: " + "; ".join(c.detail for c in self.criteria)
        return "blocked: " + "; ".join(f"{c.name} — {c.detail}" for c in self.failed)

    def criteria_json(self) -> str:
        return json.dumps([c.__dict__ for c in self.criteria], sort_keys=True)


def decide(report: ChangeControlReport, policy: Policy) -> Decision:
    """The promotion decision under the policy (absolute criteria when there is no champion)."""
    cc = policy.change_control
    criteria: list[Criterion] = []
    kinds = tuple(m.kind for m in report.modifications)
    auroc = report.overall("auroc")
    if report.champion is not None and report.champion.version == report.challenger.version:
        return Decision(True, "already_champion", (), kinds, policy.sha256, policy.version)
    if report.champion is None:
        mode = "absolute"
        brier = report.overall("brier")
        criteria.append(Criterion(
            "min_auroc", auroc["challenger"] >= cc.absolute_acceptance.min_auroc,
            f"AUROC {auroc['challenger']:.3f} (CI {auroc['challenger_lower']:.3f}–{auroc['challenger_upper']:.3f}) "
            f"vs minimum {cc.absolute_acceptance.min_auroc:.2f}",
        ))
        criteria.append(Criterion(
            "max_brier", brier["challenger"] <= cc.absolute_acceptance.max_brier,
            f"Brier {brier['challenger']:.4f} vs maximum {cc.absolute_acceptance.max_brier:.2f}",
        ))
    else:
        mode = "champion_comparison"
        lower = auroc["lower"]
        ok = lower == lower and lower > -cc.acceptance.max_auroc_drop
        criteria.append(Criterion(
            "no_significant_auroc_regression", bool(ok),
            f"ΔAUROC {auroc['delta']:+.3f} (paired {report.confidence:.0%} CI {lower:+.3f} to {auroc['upper']:+.3f}); "
            f"lower bound must exceed −{cc.acceptance.max_auroc_drop:.2f}",
        ))
        envelope = report.envelope
        criteria.append(Criterion("inside_change_envelope", bool(envelope and envelope.inside),
                                  envelope.describe() if envelope else "no envelope assessed"))
    if cc.acceptance.no_new_fairness_failures:
        new = report.fairness.new_failures
        criteria.append(Criterion(
            "no_new_fairness_failures", not new,
            (f"new blocking fairness failures: {', '.join(new)}" if new else
             f"no new blocking fairness failure ({report.fairness.source})"),
        ))
    if policy.drift.blocking:
        unaddressed = [d["extract_id"] for d in report.drift if d["dataset_drift"] and not d["challenger_trained_on_it"]]
        criteria.append(Criterion(
            "drift_addressed", not unaddressed,
            (f"dataset drift in {', '.join(unaddressed)} not in the challenger's training data" if unaddressed
             else "every drifted extract is in the challenger's training data"),
        ))
    return Decision(all(c.passed for c in criteria), mode, tuple(criteria), kinds, policy.sha256, policy.version)

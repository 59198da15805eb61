"""The promotion decision under the one evidence rule: the burden of proof is on the challenger.

Every criterion has an evidence status (:mod:`clinical_mlops.core.evidence`) and a reason, and
says what can settle it when its evidence is insufficient (``resolution``):

* ``waiver`` — a named approver's active waiver for this version (``clinical-mlops waive``);
* ``evidence`` — nothing but the missing evidence (e.g. fairness was never assessed): blocks;
* ``review`` — a named approver's manual promotion (a mitigation is a modification to review).

The rule: any ``fail`` → **blocked**; else any insufficient criterion that only evidence can
settle → **blocked**; else any insufficient criterion without an active waiver, or any review →
**pending_approval**, with the exact command to run; else → **promoted** automatically.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from clinical_mlops.core import evidence
from clinical_mlops.core.evidence import FAIL, INSUFFICIENT, PASS, Status
from clinical_mlops.governance.policy import Policy
from clinical_mlops.governance.waivers import Waiver
from clinical_mlops.registry.change_control._fairness import NOT_ASSESSED
from clinical_mlops.registry.change_control._report import ChangeControlReport

__all__ = [
    "BLOCKED",
    "DECISION_STATUSES",
    "NOT_ASSESSABLE_GROUPS",
    "PENDING_APPROVAL",
    "PROMOTED",
    "Criterion",
    "Decision",
    "decide",
    "promote_command",
    "waive_command",
]

PROMOTED, BLOCKED, PENDING_APPROVAL = "promoted", "blocked", "pending_approval"
DECISION_STATUSES = (PROMOTED, BLOCKED, PENDING_APPROVAL)
NOT_ASSESSABLE_GROUPS = "not_assessable_groups"


@dataclass(frozen=True)
class Criterion:
    name: str
    status: Status
    reason: str
    resolution: str = "waiver"  # waiver | evidence | review: what settles insufficient evidence
    waiver_id: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def waived(self) -> bool:
        return self.status == INSUFFICIENT and self.waiver_id is not None

    @property
    def open(self) -> bool:
        """Insufficient evidence that nothing has settled yet."""
        return self.status == INSUFFICIENT and not self.waived

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class Decision:
    status: str  # promoted | blocked | pending_approval
    mode: str  # champion_comparison | absolute | already_champion
    criteria: tuple[Criterion, ...]
    modification_kinds: tuple[str, ...]
    policy_sha256: str
    policy_version: str
    cohort: str = ""
    model_name: str = ""
    model_version: str = ""
    incidents: tuple[str, ...] = ()
    next_command: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == PROMOTED

    @property
    def evidence_status(self) -> Status:
        """The gate's evidence: pass only when promotable, fail when blocked by a fail, else insufficient."""
        if self.passed:
            return PASS
        return FAIL if self.failed else INSUFFICIENT

    @property
    def failed(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if c.status == FAIL)

    @property
    def missing(self) -> tuple[Criterion, ...]:
        """Criteria with insufficient evidence that no waiver covers."""
        return tuple(c for c in self.criteria if c.open)

    @property
    def waiver_ids(self) -> tuple[str, ...]:
        return tuple(c.waiver_id for c in self.criteria if c.waived and c.waiver_id)

    @property
    def summary(self) -> str:
        if self.mode == "already_champion":
            return "the challenger is already the champion"
        if self.status == BLOCKED:
            stops = self.failed or tuple(c for c in self.missing if c.resolution == "evidence")
            return "blocked: " + "; ".join(f"{c.name} — {c.reason}" for c in stops)
        if self.status == PENDING_APPROVAL:
            return "pending approval: " + "; ".join(f"{c.name} — {c.reason}" for c in self.missing)
        waived = [f"{c.name} (waiver {c.waiver_id})" for c in self.criteria if c.waived]
        return "acceptance criteria met" + (f"; relying on {', '.join(waived)}" if waived else "")

    def criteria_json(self) -> str:
        return json.dumps([c.as_dict() for c in self.criteria], sort_keys=True)

    def as_dict(self) -> dict:
        return {"status": self.status, "mode": self.mode, "summary": self.summary,
                "criteria": [c.as_dict() for c in self.criteria], "waiver_ids": list(self.waiver_ids),
                "incidents": list(self.incidents), "next_command": self.next_command,
                "model": f"{self.model_name} v{self.model_version}"}


def waive_command(cohort: str, model: str, version: str, criterion: str) -> str:
    return (f"clinical-mlops waive --cohort {shlex.quote(cohort)} --model {shlex.quote(model)} --version {version} "
            f'--criterion {shlex.quote(criterion)} --approver "<name>" --reason "<why>"')


def promote_command(model: str, version: str, waive: tuple[str, ...] = ()) -> str:
    waivers = "".join(f" --waive {shlex.quote(c)}" for c in waive)
    return f'clinical-mlops promote --model {shlex.quote(model)} --version {version}{waivers} --approver "<name>" --reason "<why>"'


def _interval_regression(auroc: dict, drop: float, confidence: float) -> evidence.Evidence:
    """Pass if the paired ΔAUROC lower bound > −drop, fail if its upper bound < −drop, else insufficient."""
    lower, upper = auroc["lower"], auroc["upper"]
    text = (f"ΔAUROC {auroc['delta']:+.3f} (paired {confidence:.0%} CI {lower:+.3f} to {upper:+.3f}); "
            f"lower bound must exceed −{drop:.2f}")
    if lower != lower or upper != upper:
        return evidence.Evidence(INSUFFICIENT, "ΔAUROC has no paired interval")
    if lower > -drop:
        return evidence.Evidence(PASS, text)
    if upper < -drop:
        return evidence.Evidence(FAIL, text + ": a significant regression")
    return evidence.Evidence(INSUFFICIENT, text + ": the interval straddles it")


def _criteria(report: ChangeControlReport, policy: Policy, review: str | None) -> list[Criterion]:
    cc = policy.change_control
    out: list[Criterion] = []
    auroc = report.overall("auroc")
    if report.champion is None:
        brier = report.overall("brier")
        for name, found in (
            ("min_auroc", evidence.at_least(auroc["challenger_lower"], auroc["challenger_upper"],
                                            cc.absolute_acceptance.min_auroc, what=f"AUROC {auroc['challenger']:.3f}")),
            ("max_brier", evidence.at_most(brier["challenger_lower"], brier["challenger_upper"],
                                           cc.absolute_acceptance.max_brier, what=f"Brier {brier['challenger']:.4f}")),
        ):
            out.append(Criterion(name, found.status, found.reason))
    else:
        found = _interval_regression(auroc, cc.acceptance.max_auroc_drop, report.confidence)
        out.append(Criterion("no_significant_auroc_regression", found.status, found.reason))
        envelope = report.envelope
        if envelope is None:
            out.append(Criterion("inside_change_envelope", INSUFFICIENT, "no envelope assessed", "evidence"))
        elif envelope.inside:
            out.append(Criterion("inside_change_envelope", PASS, envelope.describe()))
        elif review is not None and not envelope.not_covered:
            out.append(Criterion("inside_change_envelope", INSUFFICIENT,
                                 f"{envelope.describe()}: the approver's review covers it", "review"))
        else:
            out.append(Criterion("inside_change_envelope", FAIL, envelope.describe()))
    out += _fairness_criteria(report, policy)
    if policy.drift.blocking:
        unaddressed = [d["extract_id"] for d in report.drift if d["dataset_drift"] and not d["challenger_trained_on_it"]]
        if not report.drift:
            out.append(Criterion("drift_addressed", INSUFFICIENT, "no drift report recorded for the cohort: "
                                 "materialize drift_report", "evidence"))
        elif unaddressed:
            out.append(Criterion("drift_addressed", FAIL,
                                 f"dataset drift in {', '.join(unaddressed)} not in the challenger's training data"))
        else:
            out.append(Criterion("drift_addressed", PASS, "every drifted extract is in the challenger's training data"))
    if review is not None:
        out.append(Criterion("human_review", INSUFFICIENT, review, "review"))
    return out


def _fairness_criteria(report: ChangeControlReport, policy: Policy) -> list[Criterion]:
    fair = report.fairness
    rules = [r.name for r in policy.fairness.blocking_metrics]
    if not fair.assessed:
        reason = fair.reason if fair.reason and fair.source != NOT_ASSESSED else (
            f"fairness was never assessed for this version: materialize {report.cohort}/fairness_report")
        return [Criterion("fairness_assessed", INSUFFICIENT, reason, "evidence"),
                *(Criterion(f"fairness:{r}", INSUFFICIENT, reason, "evidence") for r in rules)]
    out = [Criterion("fairness_assessed", PASS, fair.reason)]
    by_rule = {a.rule: a for a in fair.rules}
    for name in rules:
        assessed = by_rule.get(name)
        if assessed is None:
            out.append(Criterion(f"fairness:{name}", INSUFFICIENT, f"no assessment of {name} in the report",
                                 "evidence"))
        else:
            out.append(Criterion(f"fairness:{name}", assessed.status, assessed.reason))
    acknowledged_by = policy.fairness.not_assessable_acknowledged_by
    if fair.not_assessable and acknowledged_by:
        out.append(Criterion(NOT_ASSESSABLE_GROUPS, PASS,
                             f"{len(fair.not_assessable)} group(s) could not be assessed, acknowledged in policy "
                             f"{policy.version} by the {acknowledged_by.replace('_', ' ')} "
                             f"({policy.owners.contact(acknowledged_by)}): " + ", ".join(fair.not_assessable)))
    elif fair.not_assessable:
        out.append(Criterion(NOT_ASSESSABLE_GROUPS, INSUFFICIENT,
                             f"{len(fair.not_assessable)} group(s) could not be assessed and need an acknowledgement: "
                             + ", ".join(fair.not_assessable)))
    else:
        out.append(Criterion(NOT_ASSESSABLE_GROUPS, PASS, "no group left unassessed"))
    return out


def _apply(criterion: Criterion, waiver: Waiver | None, report: ChangeControlReport, policy: Policy,
           now: datetime | None) -> Criterion:
    if waiver is None or not criterion.open or criterion.resolution != "waiver":
        return criterion
    if (waiver.model_name, str(waiver.model_version)) != (report.challenger.name, report.challenger.version):
        return criterion
    if not waiver.active(now):
        return replace(criterion, reason=criterion.reason + f"; waiver {waiver.waiver_id} expired "
                                                            f"{waiver.expires_at:%Y-%m-%d}")
    if waiver.policy_sha256 != policy.sha256:
        return replace(criterion, reason=criterion.reason + f"; waiver {waiver.waiver_id} was given under "
                                                            "another policy")
    return replace(criterion, waiver_id=waiver.waiver_id,
                   reason=criterion.reason + f"; waived by {waiver.approved_by} until {waiver.expires_at:%Y-%m-%d} "
                                             f"({waiver.reason})")


def decide(report: ChangeControlReport, policy: Policy, *, waivers: Mapping[str, Waiver] | None = None,
           review: str | None = None, now: datetime | None = None) -> Decision:
    """The decision on ``report`` under ``policy``, with the version's waivers (criterion → waiver).

    ``review`` (e.g. for a mitigated challenger) names why a human must approve: the decision is
    then at best ``pending_approval`` with the promote command.
    """
    kinds = tuple(m.kind for m in report.modifications)
    common = dict(modification_kinds=kinds, policy_sha256=policy.sha256, policy_version=policy.version,
                  cohort=report.cohort, model_name=report.challenger.name, model_version=report.challenger.version,
                  incidents=report.fairness.incidents)
    champion = report.champion
    if champion is not None and (champion.name, champion.version) == (report.challenger.name,
                                                                      report.challenger.version):
        return Decision(PROMOTED, "already_champion", (), **common)
    mode = "absolute" if champion is None else "champion_comparison"
    waivers = waivers or {}
    criteria = tuple(_apply(c, waivers.get(c.name), report, policy, now) for c in _criteria(report, policy, review))
    open_ = [c for c in criteria if c.open]
    if any(c.status == FAIL for c in criteria) or any(c.resolution == "evidence" for c in open_):
        status, command = BLOCKED, None
    elif open_:
        status = PENDING_APPROVAL
        to_waive = tuple(c.name for c in open_ if c.resolution == "waiver")
        name, version = report.challenger.name, report.challenger.version
        if any(c.resolution == "review" for c in open_):
            command = promote_command(name, version, to_waive)
        else:
            command = " && ".join(waive_command(report.cohort, name, version, c) for c in to_waive)
    else:
        status, command = PROMOTED, None
    return Decision(status, mode, criteria, next_command=command, **common)

"""What the registry assets do, as plain functions (no Dagster), one per asset.

* :func:`change_control_report` — ``[cohort, change_control_report]``: challenger (and its mitigated
  challenger) against the cohort's champion;
* :func:`promote_if_accepted` — ``[cohort, promotion]``: the promotion gate under the evidence rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import tracking
from clinical_mlops.core.steps import StepError, escalation, report_path
from clinical_mlops.fairness import audit as fairness_audit
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance import waivers
from clinical_mlops.governance.policy import Policy, for_cohort
from clinical_mlops.registry import aliases as registry, change_control
from clinical_mlops.training import fit
from clinical_mlops.training.modelling import registered_model_name

__all__ = ["ChangeControlStep", "MitigatedAssessment", "MitigatedDecision", "PromotionStep", "change_control_report",
           "check_report_current", "decide_now", "promote_if_accepted"]


@dataclass(frozen=True)
class MitigatedAssessment:
    """The mitigated challenger derived from the current candidate, as change control assessed it."""

    report: change_control.ChangeControlReport
    decision: change_control.Decision
    report_id: str
    path: Path
    tradeoff: change_control.MitigatedTradeoff


@dataclass(frozen=True)
class ChangeControlStep:
    challenger: change_control.ModelDescription
    champion: change_control.ModelDescription | None
    report: change_control.ChangeControlReport
    decision: change_control.Decision
    markdown: str
    path: Path
    report_id: str
    policy: Policy
    mitigated: MitigatedAssessment | None = None


def _champion(con: duckdb.DuckDBPyConnection, cohort: str, challenger: change_control.ModelDescription
              ) -> change_control.ModelDescription | None:
    found = registry.cohort_champion(con, cohort)
    if found is None:
        return None
    if found == (challenger.name, challenger.version):
        return challenger
    return change_control.describe_model(con, *found)


def _assess_mitigated(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, policy: Policy, candidate: change_control.ChangeControlReport,
    champion: change_control.ModelDescription | None, *, n_bootstrap: int | None, seed: int | None,
    reports_dir: Path | str,
) -> MitigatedAssessment | None:
    """Change control of the ``<cohort>_mitigated`` version derived from the candidate, if there is one."""
    row = change_control.derived_mitigation(con, spec.name, candidate.challenger.name, candidate.challenger.version)
    if row is None:
        return None
    model = change_control.describe_model(con, row["model_name"], str(row["model_version"]))
    if champion is not None and (champion.name, champion.version) == (model.name, model.version):
        champion = model
    report = change_control.build_report(con, spec, policy, challenger=model, champion=champion,
                                         n_boot=n_bootstrap, seed=seed)
    decision = change_control.decide(report, policy, waivers=waivers.active_waivers(con, model.name, model.version),
                                     review=change_control.review_reason(row))
    markdown = change_control.render_markdown(report, decision)
    path = report_path(reports_dir, spec.name, "change_control",
                       f"{model.name}_v{model.version}_vs_{champion.version if champion else 'none'}.md")
    path.write_text(markdown, encoding="utf-8")
    report_id = change_control.store_report(con, report, decision, markdown, path)
    method = str(json.loads(row["params_json"]).get("mitigation", "unknown"))
    trade = change_control.tradeoff(con, candidate, report, method, decision.status, decision.next_command)
    return MitigatedAssessment(report, decision, report_id, path, trade)


def change_control_report(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, n_bootstrap: int | None, seed: int | None,
    actor: str, tracking_uri: str, artifact_root: Path | str, reports_dir: Path | str,
) -> ChangeControlStep:
    """``[cohort, change_control_report]``: alias the latest candidate ``challenger`` and compare it with
    the cohort's ``champion`` (candidate or mitigated) on the same held-out rows — paired-bootstrap metric
    deltas overall and per subgroup, the fairness evidence of its audit, drift context, the diff of
    features / algorithm / hyperparameters / data, and the policy's modification envelope — with the
    decision under the evidence rule (and the version's active waivers). A mitigated challenger derived
    from this candidate is assessed the same way and its trade-off shown. Markdown in the reports
    folder and ``audit.change_control_reports``."""
    policy = for_cohort(policy, spec)  # the thresholds, with the sensitive attributes of the cohort's source
    tracking.configure(tracking_uri, Path(artifact_root))
    model_name = registered_model_name(spec.name, "candidate")
    latest = fit.latest_model_version(con, spec.name, "candidate")
    if latest is None or latest["model_name"] != model_name:
        raise StepError(f"no {model_name} registered: materialize {spec.name}/candidate_model first")
    version = str(latest["model_version"])
    registry.set_alias(con, model_name, registry.CHALLENGER, version, actor=actor,
                       reason="latest registered candidate", policy_sha256=policy.sha256)
    challenger = change_control.describe_model(con, model_name, version)
    champion = _champion(con, spec.name, challenger)
    report = change_control.build_report(con, spec, policy, challenger=challenger, champion=champion,
                                         n_boot=n_bootstrap, seed=seed)
    decision = change_control.decide(report, policy, waivers=waivers.active_waivers(con, model_name, version))
    mitigated = _assess_mitigated(con, spec, policy, report, champion, n_bootstrap=n_bootstrap, seed=seed,
                                  reports_dir=reports_dir)
    markdown = change_control.render_markdown(report, decision, None if mitigated is None else mitigated.tradeoff)
    path = report_path(reports_dir, spec.name, "change_control",
                       f"{model_name}_v{version}_vs_{champion.version if champion else 'none'}.md")
    path.write_text(markdown, encoding="utf-8")
    report_id = change_control.store_report(con, report, decision, markdown, path)
    return ChangeControlStep(challenger, champion, report, decision, markdown, path, report_id, policy, mitigated)


@dataclass(frozen=True)
class MitigatedDecision:
    decision: change_control.Decision
    decision_id: str
    report_id: str


@dataclass(frozen=True)
class PromotionStep:
    report: change_control.ChangeControlReport
    report_id: str
    decision: change_control.Decision
    champion_before: str | None
    champion_after: str | None
    promoted: bool
    decision_id: str
    policy: Policy
    escalation: dict | None
    """The policy's ``block_promotion`` escalation when the gate does not pass, else None."""
    mitigated: MitigatedDecision | None = None


def _label(found: tuple[str, str] | None) -> str | None:
    return None if found is None else f"{found[0]} v{found[1]}"


def _record(con: duckdb.DuckDBPyConnection, spec: CohortSpec, report: change_control.ChangeControlReport,
            decision: change_control.Decision, *, promoted: bool, actor: str, policy: Policy, report_id: str) -> str:
    return change_control.record_decision(
        con, cohort=spec.name, model_name=report.challenger.name, challenger_version=report.challenger.version,
        champion_version=None if report.champion is None else report.champion.version, mode=decision.mode,
        passed=decision.passed, promoted=promoted, modification_kinds=decision.modification_kinds,
        criteria_json=decision.criteria_json(), reason=decision.summary, actor=actor, policy_sha256=policy.sha256,
        policy_version=policy.version, report_id=report_id, status=decision.status, waiver_ids=decision.waiver_ids,
        next_command=decision.next_command, incidents=decision.incidents,
    )


def check_report_current(con: duckdb.DuckDBPyConnection, report: change_control.ChangeControlReport, policy: Policy) -> None:
    """Refuse a report made under another champion, policy or fairness audit than the ones in force."""
    champion_now = registry.cohort_champion(con, report.cohort)
    reported = None if report.champion is None else (report.champion.name, report.champion.version)
    if champion_now != reported:
        raise StepError(f"the champion moved ({_label(reported) or 'none'} → {_label(champion_now) or 'none'}) after "
                        "the change-control report; rematerialize change_control_report")
    if report.policy_sha256 != policy.sha256:
        raise StepError("the governance policy changed after the change-control report; rematerialize it")
    gate = fairness_audit.rule_statuses(con, report.challenger.name, report.challenger.version)
    if gate is None and report.fairness.assessed:  # a second line of defence behind the graph's order
        raise StepError(f"{report.challenger.label} has no fairness audit in this warehouse: "
                        f"materialize {report.cohort}/fairness_report")
    if gate is not None and gate.audit_id != report.fairness.challenger_audit_id:
        raise StepError(f"{report.challenger.label} was audited for fairness again after the change-control report; "
                        "rematerialize change_control_report")


def promote_if_accepted(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, actor: str, tracking_uri: str,
    artifact_root: Path | str,
) -> PromotionStep:
    """``[cohort, promotion]``: decide on the latest change-control report under the evidence rule —
    ``promoted`` (the ``champion`` alias moves), ``blocked`` or ``pending_approval`` (the exact command to
    run is recorded) — with the version's active waivers; every decision goes to
    ``audit.promotion_decisions`` with the policy hash, the waivers relied on and the next command. A
    challenger without a fairness audit is blocked, never promoted. The mitigated challenger derived from
    the same candidate gets its own decision, at best ``pending_approval`` (never promoted here). A report
    made under another champion, policy or fairness audit raises :class:`StepError` (rematerialize it)."""
    policy = for_cohort(policy, spec)  # the thresholds, with the sensitive attributes of the cohort's source
    tracking.configure(tracking_uri, Path(artifact_root))
    model_name = registered_model_name(spec.name, "candidate")
    stored = change_control.latest_report(con, spec.name, model_name)
    if stored is None:
        raise StepError(f"no change-control report for {spec.name}: materialize change_control_report first")
    report_id, report = stored
    check_report_current(con, report, policy)
    version = report.challenger.version
    reported = report.champion.version if report.champion else None
    # The decision first; the alias moves only if it is ``promoted``.
    decision = change_control.decide(report, policy, waivers=waivers.active_waivers(con, model_name, version))
    promoted = False
    if decision.passed and decision.mode != "already_champion":
        change = registry.promote(con, model_name, version, actor=actor, reason=decision.summary,
                                  policy_sha256=policy.sha256)
        promoted = change is not None
    decision_id = _record(con, spec, report, decision, promoted=promoted, actor=actor, policy=policy,
                          report_id=report_id)
    mitigated = _decide_mitigated(con, spec, report, policy, actor)
    champion_after = registry.cohort_champion(con, spec.name)
    return PromotionStep(
        report=report, report_id=report_id, decision=decision, champion_before=reported,
        champion_after=None if champion_after is None else champion_after[1], promoted=promoted,
        decision_id=decision_id, policy=policy,
        escalation=None if decision.passed else escalation(policy, "block_promotion"), mitigated=mitigated,
    )


def decide_now(con: duckdb.DuckDBPyConnection, report: change_control.ChangeControlReport, policy: Policy, *,
               extra_waivers: dict | None = None) -> change_control.Decision:
    """The decision on a stored report with the version's active waivers (plus ``extra_waivers``), and the
    review a mitigated version needs."""
    name, version = report.challenger.name, report.challenger.version
    found = {**waivers.active_waivers(con, name, version), **(extra_waivers or {})}
    cursor = con.execute("SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?", [name, version])
    row = cursor.fetchone()
    record = None if row is None else dict(zip([d[0] for d in cursor.description], row))
    review = change_control.review_reason(record) if record and record["role"] == change_control.MITIGATED_ROLE else None
    return change_control.decide(report, policy, waivers=found, review=review)


def _decide_mitigated(con: duckdb.DuckDBPyConnection, spec: CohortSpec, candidate: change_control.ChangeControlReport,
                      policy: Policy, actor: str) -> MitigatedDecision | None:
    """The mitigated challenger's decision (recorded, never promoted automatically), if its report is current."""
    row = change_control.derived_mitigation(con, spec.name, candidate.challenger.name, candidate.challenger.version)
    if row is None:
        return None
    stored = change_control.latest_report(con, spec.name, row["model_name"])
    if stored is None or stored[1].challenger.version != str(row["model_version"]):
        return None
    report_id, report = stored
    decision = change_control.decide(
        report, policy, waivers=waivers.active_waivers(con, report.challenger.name, report.challenger.version),
        review=change_control.review_reason(row))
    decision_id = _record(con, spec, report, decision, promoted=False, actor=actor, policy=policy, report_id=report_id)
    return MitigatedDecision(decision, decision_id, report_id)

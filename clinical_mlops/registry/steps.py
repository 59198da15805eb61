"""What the registry assets do, as plain functions (no Dagster), one per asset.

* :func:`change_control_report` — ``[cohort, change_control_report]``: challenger against champion;
* :func:`promote_if_accepted` — ``[cohort, promotion]``: the promotion gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from clinical_mlops.core import tracking
from clinical_mlops.core.steps import StepError, escalation, report_path
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy
from clinical_mlops.registry import aliases as registry, change_control
from clinical_mlops.training import fit
from clinical_mlops.training.modelling import registered_model_name

__all__ = ["ChangeControlStep", "PromotionStep", "change_control_report", "promote_if_accepted"]


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


def change_control_report(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, n_bootstrap: int | None, seed: int | None,
    actor: str, tracking_uri: str, artifact_root: Path | str, reports_dir: Path | str,
) -> ChangeControlStep:
    """``[cohort, change_control_report]``: alias the latest candidate ``challenger`` and compare it with
    the ``champion`` on the same held-out rows — paired-bootstrap metric deltas overall and per subgroup,
    fairness verdict changes, drift context, the diff of features / algorithm / hyperparameters / data,
    and the policy's modification envelope — with the gate's decision; Markdown in the reports folder
    and ``audit.change_control_reports``."""
    tracking.configure(tracking_uri, Path(artifact_root))
    model_name = registered_model_name(spec.name, "candidate")
    latest = fit.latest_model_version(con, spec.name, "candidate")
    if latest is None or latest["model_name"] != model_name:
        raise StepError(f"no {model_name} registered: materialize {spec.name}/candidate_model first")
    version = str(latest["model_version"])
    registry.set_alias(con, model_name, registry.CHALLENGER, version, actor=actor,
                       reason="latest registered candidate", policy_sha256=policy.sha256)
    champion_version = registry.current_alias(con, model_name, registry.CHAMPION)
    challenger = change_control.describe_model(con, model_name, version)
    champion = None
    if champion_version is not None:
        champion = challenger if champion_version == version else \
            change_control.describe_model(con, model_name, champion_version)
    report = change_control.build_report(con, spec, policy, challenger=challenger, champion=champion,
                                         n_boot=n_bootstrap, seed=seed)
    decision = change_control.decide(report, policy)
    markdown = change_control.render_markdown(report, decision)
    path = report_path(reports_dir, spec.name, "change_control",
                       f"{model_name}_v{version}_vs_{champion_version or 'none'}.md")
    path.write_text(markdown, encoding="utf-8")
    report_id = change_control.store_report(con, report, decision, markdown, path)
    return ChangeControlStep(challenger, champion, report, decision, markdown, path, report_id, policy)


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
    """The policy's ``block_promotion`` escalation when the gate fails, else None."""


def promote_if_accepted(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, actor: str, tracking_uri: str,
    artifact_root: Path | str,
) -> PromotionStep:
    """``[cohort, promotion]``: decide on the latest change-control report under the policy and, only
    if the acceptance criteria hold, move the ``champion`` alias to the challenger; every decision goes
    to ``audit.promotion_decisions`` with the policy hash. A report made under another champion or
    another policy raises :class:`StepError` (rematerialize it)."""
    tracking.configure(tracking_uri, Path(artifact_root))
    model_name = registered_model_name(spec.name, "candidate")
    stored = change_control.latest_report(con, spec.name)
    if stored is None:
        raise StepError(f"no change-control report for {spec.name}: materialize change_control_report first")
    report_id, report = stored
    champion_now = registry.current_alias(con, model_name, registry.CHAMPION)
    reported = report.champion.version if report.champion else None
    if champion_now != reported:
        raise StepError(f"the champion moved (v{reported} → v{champion_now}) after the change-control report; "
                        "rematerialize change_control_report")
    if report.policy_sha256 != policy.sha256:
        raise StepError("the governance policy changed after the change-control report; rematerialize it")
    # The decision first; the alias moves only if it passes.
    decision = change_control.decide(report, policy)
    promoted = False
    if decision.passed and decision.mode != "already_champion":
        change = registry.promote(con, model_name, report.challenger.version, actor=actor,
                                  reason=decision.summary, policy_sha256=policy.sha256)
        promoted = change is not None
    decision_id = change_control.record_decision(
        con, cohort=spec.name, model_name=model_name, challenger_version=report.challenger.version,
        champion_version=reported, mode=decision.mode, passed=decision.passed, promoted=promoted,
        modification_kinds=decision.modification_kinds, criteria_json=decision.criteria_json(),
        reason=decision.summary, actor=actor, policy_sha256=policy.sha256,
        policy_version=policy.version, report_id=report_id,
    )
    champion_after = registry.current_alias(con, model_name, registry.CHAMPION)
    return PromotionStep(
        report=report, report_id=report_id, decision=decision, champion_before=reported,
        champion_after=champion_after, promoted=promoted, decision_id=decision_id, policy=policy,
        escalation=None if decision.passed else escalation(policy, "block_promotion"),
    )

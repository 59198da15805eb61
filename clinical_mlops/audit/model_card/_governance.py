"""The governance facts of a card: the fairness gate, waivers, the previous promotion decision, drift, mitigations.

Each is read from what was recorded (``monitoring.fairness_verdicts`` through
:func:`clinical_mlops.fairness.audit.rule_statuses`, ``audit.waivers``, ``audit.promotion_decisions``,
``monitoring.drift_runs``, ``ml.model_versions``), as aggregates, and is ``None`` or empty when
nothing was recorded — the card and the TRIPOD+AI report then say so instead of falling silent.
Tables written by other stages are read defensively: a missing table or column is "not recorded".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from clinical_mlops.core import evidence
from clinical_mlops.core.reporting import format_number
from clinical_mlops.core.warehouse import columns as _columns, table_exists as _table_exists
from clinical_mlops.fairness import audit as fairness_audit
from clinical_mlops.governance import waivers as governance_waivers

__all__ = [
    "ALERT",
    "GovernanceFacts",
    "decision_lines",
    "drift_lines",
    "fairness_gate_lines",
    "gather_governance",
    "waiver_lines",
]

ALERT = "⚠"
"""Bold text starting with this sign is rendered in red on the HTML card."""

_SMALL_CELL = 11


@dataclass(frozen=True)
class GovernanceFacts:
    """What governance recorded about one version (aggregates only)."""

    gate: Any | None
    """The :class:`clinical_mlops.fairness.audit.FairnessGate` of the latest audit, or None (never audited)."""
    waivers: tuple[governance_waivers.Waiver, ...] = ()
    decision: dict[str, Any] | None = None
    """The latest recorded promotion decision of this version (the previous one: the card precedes promotion)."""
    drift: dict[str, Any] | None = None
    """The newest drift run of the cohort."""
    mitigations: tuple[dict[str, Any], ...] = ()
    """Mitigated challengers registered from this version."""
    notes: tuple[str, ...] = field(default_factory=tuple)


_GATE_COLUMNS = frozenset({"audit_id", "evaluated_at", "model_name", "model_version", "policy_sha256", "rule",
                           "severity", "blocking", "slice", "group", "n", "estimate", "lower", "upper", "verdict",
                           "reason"})


def _gate(con: duckdb.DuckDBPyConnection, name: str, version: str, notes: list[str]) -> Any | None:
    table = "monitoring.fairness_verdicts"
    if _table_exists(con, table) and not _GATE_COLUMNS <= set(_columns(con, table)):
        # checked, not tried: a failed query would abort the caller's transaction
        notes.append("The fairness verdicts are not in the fairness stage's format; no gate could be read from them.")
        return None
    return fairness_audit.rule_statuses(con, name, version)


def _waivers(con: duckdb.DuckDBPyConnection, name: str, version: str) -> tuple[governance_waivers.Waiver, ...]:
    if not _table_exists(con, "audit.waivers"):
        return ()
    return tuple(governance_waivers.waivers_for(con, name, version))


def _decision(con: duckdb.DuckDBPyConnection, name: str, version: str) -> dict[str, Any] | None:
    table = "audit.promotion_decisions"
    if not _table_exists(con, table):
        return None
    available = set(_columns(con, table))
    if not {"model_name", "challenger_version", "decided_at"} <= available:
        return None
    wanted = [c for c in ("decided_at", "mode", "status", "passed", "promoted", "reason", "actor", "champion_version",
                          "policy_sha256", "waiver_ids_json") if c in available]
    cursor = con.execute(
        f"SELECT {', '.join(wanted)} FROM {table} WHERE model_name = ? AND CAST(challenger_version AS VARCHAR) = ? "
        "ORDER BY decided_at DESC LIMIT 1", [name, str(version)])
    row = cursor.fetchone()
    return None if row is None else dict(zip(wanted, row))


def _drift(con: duckdb.DuckDBPyConnection, cohort: str) -> dict[str, Any] | None:
    table = "monitoring.drift_runs"
    if not _table_exists(con, table):
        return None
    wanted = [c for c in ("computed_at", "extract_id", "reference_kind", "reference_model", "reference_version",
                          "features_tested", "features_drifted", "drift_share", "dataset_drift", "severity")
              if c in set(_columns(con, table))]
    if "computed_at" not in wanted:
        return None
    cursor = con.execute(f"SELECT {', '.join(wanted)} FROM {table} WHERE cohort = ? ORDER BY computed_at DESC LIMIT 1",
                         [cohort])
    row = cursor.fetchone()
    return None if row is None else dict(zip(wanted, row))


def _mitigations(con: duckdb.DuckDBPyConnection, name: str, version: str) -> tuple[dict[str, Any], ...]:
    if not _table_exists(con, "ml.model_versions"):
        return ()
    rows = con.execute(
        """SELECT model_name, model_version, params_json FROM ml.model_versions WHERE role = 'mitigated'
           ORDER BY registered_at""").fetchall()
    found = []
    for model_name, model_version, params_json in rows:
        params = json.loads(params_json or "{}")
        if params.get("base_model") == f"{name}/{version}":
            found.append({"model": f"{model_name} v{model_version}", "method": params.get("mitigation")})
    return tuple(found)


def gather_governance(con: duckdb.DuckDBPyConnection, cohort: str, name: str, version: str) -> GovernanceFacts:
    """The governance facts of one version; each part empty when nothing was recorded."""
    notes: list[str] = []
    return GovernanceFacts(
        gate=_gate(con, name, version, notes),
        waivers=_waivers(con, name, version),
        decision=_decision(con, name, version),
        drift=_drift(con, cohort),
        mitigations=_mitigations(con, name, version),
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------
# how the facts are written
# ---------------------------------------------------------------------------------------------


def _n(n: int) -> str:
    return f"<{_SMALL_CELL}" if 0 < n < _SMALL_CELL else f"{n:,}"


def _interval(finding: Any) -> str:
    return (f"{format_number(finding.estimate, sign=True)} "
            f"[{format_number(finding.lower, sign=True)}, {format_number(finding.upper, sign=True)}]")


def _status_text(status: str) -> str:
    return {evidence.PASS: "pass", evidence.FAIL: f"**{ALERT} fail**",
            evidence.INSUFFICIENT: f"**{ALERT} insufficient evidence**"}.get(status, status)


def _findings_table(findings: tuple[Any, ...], *, with_power: bool) -> list[str]:
    power = with_power and any(getattr(f, "min_detectable_gap", None) is not None for f in findings)
    header = "| slice | group | n | gap [95% CI] |" + (" smallest gap detectable (80% power) |" if power else "")
    lines = [header, "|---|---|---|---|" + ("---|" if power else "")]
    for f in findings:
        cells = [f.slice, f.group, _n(int(f.n)), _interval(f)]
        if power:
            cells.append(format_number(getattr(f, "min_detectable_gap", None)))
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return lines


def fairness_gate_lines(gate: Any | None) -> list[str]:
    """The gate per rule under the one evidence rule, or a red statement that fairness was not assessed."""
    if gate is None:
        return [f"**{ALERT} Fairness was not assessed for this version:** no fairness audit is recorded, so there "
                "is no evidence that its error rates are comparable across groups. It cannot pass the fairness gate."]
    lines = [f"Latest fairness audit `{gate.audit_id}` under the governance policy (sha256 `{gate.policy_sha256}`). "
             "A rule passes for a group only when the group's whole interval lies inside the bound, fails when it "
             "lies wholly outside, and otherwise has insufficient evidence, which does not pass.", "",
             "| rule | severity | blocking | status | reason |", "|---|---|---|---|---|"]
    for rule in gate.rules:
        lines.append(f"| {rule.rule} | {rule.severity} | {'yes' if rule.blocking else 'no'} | "
                     f"{_status_text(rule.status)} | {rule.reason} |")
    if not gate.rules:
        lines.append(f"| — | — | — | **{ALERT} insufficient evidence** | the audit recorded no rule |")
    for rule in gate.rules:
        for title, findings, power in (("groups outside the bound", rule.failing, False),
                                       ("required groups without sufficient evidence", rule.insufficient_required, True),
                                       ("groups not assessable (listed, acknowledged at promotion)",
                                        getattr(rule, "not_assessable", ()), True)):
            if findings:
                lines += ["", f"**{rule.rule}: {title}**", "", *_findings_table(tuple(findings), with_power=power)]
    return lines


def waiver_lines(waivers: tuple[governance_waivers.Waiver, ...], now: Any = None) -> list[str]:
    """The waivers recorded for the version: who, when, why, what evidence was missing, expiry, still active."""
    if not waivers:
        return ["No waiver is recorded for this version."]
    lines = ["| criterion | approved by | approved at (UTC) | reason | missing evidence | expires (UTC) | active |",
             "|---|---|---|---|---|---|---|"]
    for w in waivers:
        active = "yes" if w.active(now) else f"**{ALERT} expired**"
        cells = [w.criterion, w.approved_by, f"{w.approved_at:%Y-%m-%d %H:%M}", w.reason,
                 "; ".join(w.missing_evidence) or "—", f"{w.expires_at:%Y-%m-%d %H:%M}", active]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return lines


def _decision_status(decision: dict[str, Any]) -> str:
    if decision.get("status"):
        return str(decision["status"])
    if decision.get("promoted"):
        return "promoted"
    passed = decision.get("passed")
    return "gate not run (manual)" if passed is None else ("passed" if passed else "blocked")


def decision_lines(decision: dict[str, Any] | None) -> list[str]:
    """The version's latest recorded promotion decision (the previous one), or that there is none."""
    if decision is None:
        return ["No promotion decision is recorded for this version yet (the card is written before promotion)."]
    decided = decision.get("decided_at")
    lines = [f"Latest recorded decision, {decided:%Y-%m-%d %H:%M} UTC" if hasattr(decided, "strftime")
             else "Latest recorded decision"]
    lines[0] += f" ({decision['mode']})" if decision.get("mode") else ""
    lines[0] += f": **{_decision_status(decision)}**"
    if decision.get("actor"):
        lines[0] += f", by {decision['actor']}"
    lines[0] += "."
    if decision.get("reason"):
        lines += ["", f"Reason: {decision['reason']}"]
    waiver_ids = json.loads(decision.get("waiver_ids_json") or "[]")
    if waiver_ids:
        lines += ["", "Waivers relied on: " + ", ".join(f"`{w}`" for w in waiver_ids) + "."]
    return lines


def drift_lines(drift: dict[str, Any] | None) -> list[str]:
    """The cohort's newest drift report, as aggregates."""
    if drift is None:
        return ["No drift report is recorded for this cohort."]
    reference = drift.get("reference_kind") or "reference"
    if drift.get("reference_model"):
        reference += f" {drift['reference_model']} v{drift.get('reference_version')}"
    computed = drift.get("computed_at")
    when = f"{computed:%Y-%m-%d %H:%M} UTC" if hasattr(computed, "strftime") else str(computed)
    verdict = "dataset drift" if drift.get("dataset_drift") else "no dataset drift"
    return [f"Newest drift report ({when}): extract `{drift.get('extract_id')}` against the {reference}: "
            f"{drift.get('features_drifted')} of {drift.get('features_tested')} features drifted "
            f"(share {format_number(drift.get('drift_share'))}), {verdict}, severity {drift.get('severity')}."]

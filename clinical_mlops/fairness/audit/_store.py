"""The audit in the warehouse: time series of group metrics and verdicts, and the latest summary."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core import evidence
from clinical_mlops.core.warehouse import transaction
from clinical_mlops.fairness.audit._gate import GroupFinding, RuleStatus, gate_for_audit
from clinical_mlops.fairness.audit._verdicts import SMALL_CELL, VERDICTS, FairnessAudit
from clinical_mlops.monitoring import incidents

__all__ = [
    "FAIRNESS_DDL",
    "ensure_tables",
    "latest_verdicts",
    "predictions_with_attributes",
    "store_audit",
    "summary_for",
]


FAIRNESS_DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS monitoring",
    """CREATE TABLE IF NOT EXISTS monitoring.fairness_metrics (
    audit_id VARCHAR NOT NULL,
    evaluated_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    model_role VARCHAR NOT NULL,
    slice VARCHAR NOT NULL,                -- attribute, or attributes joined by ' × '
    "group" VARCHAR NOT NULL,
    reference_group VARCHAR,
    kind VARCHAR NOT NULL,                 -- group | difference | ratio
    metric VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    n_positive BIGINT NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE,
    p_value DOUBLE,
    p_adjusted DOUBLE,
    operating_threshold DOUBLE NOT NULL,
    policy_version VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS monitoring.fairness_verdicts (
    audit_id VARCHAR NOT NULL,
    evaluated_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    model_role VARCHAR NOT NULL,
    slice VARCHAR NOT NULL,
    "group" VARCHAR NOT NULL,
    reference_group VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    rule VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    blocking BOOLEAN NOT NULL,
    bound DOUBLE NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE,
    p_adjusted DOUBLE,
    verdict VARCHAR NOT NULL,             -- pass | fail | insufficient_evidence
    reason VARCHAR NOT NULL,
    policy_version VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL
)""",
    # Added for the evidence rule (older warehouses gain them; NULL in older rows reads as required).
    'ALTER TABLE monitoring.fairness_verdicts ADD COLUMN IF NOT EXISTS required BOOLEAN',
    'ALTER TABLE monitoring.fairness_verdicts ADD COLUMN IF NOT EXISTS n_positive BIGINT',
    'ALTER TABLE monitoring.fairness_verdicts ADD COLUMN IF NOT EXISTS reference_n_positive BIGINT',
    'ALTER TABLE monitoring.fairness_verdicts ADD COLUMN IF NOT EXISTS min_detectable_gap DOUBLE',
    """CREATE TABLE IF NOT EXISTS monitoring.fairness_rule_outcomes (
    audit_id VARCHAR NOT NULL,
    evaluated_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    model_role VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    blocking BOOLEAN NOT NULL,
    status VARCHAR NOT NULL,              -- pass | fail | insufficient_evidence (the evidence rule)
    reason VARCHAR NOT NULL,
    groups_fail BIGINT NOT NULL,
    groups_insufficient_required BIGINT NOT NULL,
    groups_not_assessable BIGINT NOT NULL,
    policy_version VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL
)""",
)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the fairness tables if they are missing."""
    for statement in FAIRNESS_DDL:
        con.execute(statement)


def store_audit(
    con: duckdb.DuckDBPyConnection,
    result: FairnessAudit,
    *,
    cohort: str,
    model_name: str,
    model_version: str,
    model_role: str,
    evaluated_at: datetime | None = None,
) -> str:
    """Append the audit's metrics and verdicts (each row with the policy hash); returns the audit id."""
    ensure_tables(con)
    audit_id = uuid.uuid4().hex[:16]
    now = evaluated_at or datetime.now(UTC).replace(tzinfo=None)
    common = dict(audit_id=audit_id, evaluated_at=now, cohort=cohort, model_name=model_name,
                  model_version=str(model_version), model_role=model_role)
    g = result.groups
    group_rows = pd.DataFrame({
        **{k: [v] * len(g) for k, v in common.items()},
        "slice": g["slice"], "group": g["group"],
        "reference_group": np.where(g["is_reference"], g["group"], None),
        "kind": "group", "metric": g["metric"], "n": g["n"], "n_positive": g["n_positive"],
        "estimate": g["estimate"], "lower": g["lower"], "upper": g["upper"],
        "p_value": np.nan, "p_adjusted": np.nan,
    })
    d = result.disparities
    disparity_rows = pd.DataFrame({
        **{k: [v] * len(d) for k, v in common.items()},
        "slice": d["slice"], "group": d["group"], "reference_group": d["reference"], "kind": d["kind"],
        "metric": d["metric"], "n": d["n"], "n_positive": d["n_positive"], "estimate": d["estimate"],
        "lower": d["lower"], "upper": d["upper"], "p_value": d["p_value"], "p_adjusted": d["p_adjusted"],
    })
    metrics = pd.concat([group_rows, disparity_rows], ignore_index=True)
    metrics["operating_threshold"] = result.threshold
    metrics["policy_version"] = result.policy_version
    metrics["policy_sha256"] = result.policy_sha256
    v = result.verdicts
    verdicts = pd.DataFrame({
        **{k: [val] * len(v) for k, val in common.items()},
        "slice": v["slice"], "group": v["group"], "reference_group": v["reference"], "n": v["n"],
        "rule": v["rule"], "severity": v["severity"], "blocking": v["blocking"].astype(bool), "bound": v["bound"],
        "estimate": v["estimate"], "lower": v["lower"], "upper": v["upper"], "p_adjusted": v["p_adjusted"],
        "verdict": v["verdict"], "reason": v["reason"],
        "required": v["required"].astype(bool), "n_positive": v["n_positive"],
        "reference_n_positive": v["reference_n_positive"], "min_detectable_gap": v["min_detectable_gap"],
        "policy_version": result.policy_version, "policy_sha256": result.policy_sha256,
    })
    outcomes = pd.DataFrame([
        {**common, "rule": o.rule.name, "severity": o.rule.severity, "blocking": o.rule.blocking, "status": o.status,
         "reason": o.reason, "groups_fail": len(o.failing), "groups_insufficient_required": len(o.insufficient_required),
         "groups_not_assessable": len(o.not_assessable), "policy_version": result.policy_version,
         "policy_sha256": result.policy_sha256}
        for o in result.outcomes()
    ])
    tables = {"fairness_metric_rows": ("fairness_metrics", metrics),
              "fairness_verdict_rows": ("fairness_verdicts", verdicts),
              "fairness_outcome_rows": ("fairness_rule_outcomes", outcomes)}
    for view, (_, frame) in tables.items():
        con.register(view, frame)
    try:
        with transaction(con):
            for view, (table, frame) in tables.items():
                if not frame.empty:
                    con.execute(f"INSERT INTO monitoring.{table} BY NAME SELECT * FROM {view}")
    finally:
        for view in tables:
            con.unregister(view)
    return audit_id



def predictions_with_attributes(
    con: duckdb.DuckDBPyConnection, features_table: str, attributes: Iterable[str], model_name: str, version: str
) -> pd.DataFrame:
    """Test-split labels and scores of one model version joined with the sensitive attributes."""
    cols = ", ".join(f"f.{a}" for a in dict.fromkeys(attributes))
    return con.execute(
        f"""SELECT p.label, p.score, {cols}
            FROM ml.predictions p JOIN {features_table} f USING (encounter_id)
            WHERE p.model_name = ? AND p.model_version = ? AND p.split = 'test'
            ORDER BY p.encounter_id""",
        [model_name, str(version)],
    ).df()



def latest_verdicts(con: duckdb.DuckDBPyConnection, cohort: str, role: str = "candidate") -> pd.DataFrame:
    """The verdict rows of the most recent audit of the cohort's model in ``role`` (empty if none)."""
    ensure_tables(con)
    return con.execute(
        """SELECT * FROM monitoring.fairness_verdicts
           WHERE audit_id = (SELECT audit_id FROM monitoring.fairness_verdicts
                             WHERE cohort = ? AND model_role = ? ORDER BY evaluated_at DESC LIMIT 1)
           ORDER BY rule, slice, "group" """,
        [cohort, role],
    ).df()


def _latest_recall_gaps(con: duckdb.DuckDBPyConnection, cohort: str, role: str) -> pd.DataFrame:
    return con.execute(
        """SELECT * FROM monitoring.fairness_metrics
           WHERE metric = 'recall_gap' AND audit_id = (
               SELECT audit_id FROM monitoring.fairness_metrics WHERE cohort = ? AND model_role = ?
               ORDER BY evaluated_at DESC LIMIT 1)""",
        [cohort, role],
    ).df()


def _round(value: object, digits: int = 4) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else round(v, digits)


def _shown_n(n: int) -> int | str:
    return n if n >= SMALL_CELL or n == 0 else f"<{SMALL_CELL}"


def _group_summary(f: GroupFinding, *, interval: bool = False) -> dict:
    out: dict = {"slice": f.slice, "group": f.group}
    if interval:
        out |= {"estimate": _round(f.estimate), "ci": [_round(f.lower), _round(f.upper)]}
    else:
        out |= {"n": _shown_n(f.n), "reason": f.reason}
    if f.required and not interval:
        out |= {"n_positive": None if f.n_positive is None else _shown_n(f.n_positive),
                "min_detectable_gap": _round(f.min_detectable_gap)}
    return out


def _rule_summary(r: RuleStatus) -> dict:
    """One rule of one audit: status and why, failing groups with gap and interval, required groups
    without evidence (with their minimum detectable gap), and the groups not assessable."""
    return {"rule": r.rule, "severity": r.severity, "blocking": r.blocking, "status": r.status, "reason": r.reason,
            "failing": [_group_summary(f, interval=True) for f in r.failing],
            "insufficient_required": [_group_summary(f) for f in r.insufficient_required],
            "not_assessable": [{"slice": f.slice, "group": f.group} for f in r.not_assessable]}


def summary_for(con: duckdb.DuckDBPyConnection, cohort: str) -> dict:
    """Verdicts and rule statuses of the latest candidate and mitigated audits, and the recall gap
    before and after.

    Per role, ``rules`` holds each policy rule's status under the evidence rule (``pass`` |
    ``fail`` | ``insufficient_evidence``), its failing groups with gap and interval, the required
    groups without sufficient evidence and the groups not assessable; ``blocking_status`` combines
    the blocking rules. The group followed is the one with the largest failing recall gap of the
    candidate (else the largest recall gap among groups of at least the minimum size that were
    judged). JSON-ready.
    """
    ensure_tables(con)
    summary: dict = {"cohort": cohort}
    for role in ("candidate", "mitigated"):
        verdicts = latest_verdicts(con, cohort, role)
        if verdicts.empty:
            summary[role] = None
            continue
        failing = verdicts[verdicts["verdict"] == "fail"]
        gate = gate_for_audit(con, str(verdicts["audit_id"].iloc[0]))
        rules = gate.rules if gate is not None else ()
        summary[role] = {
            "model": f"{verdicts['model_name'].iloc[0]} v{verdicts['model_version'].iloc[0]}",
            "policy_version": verdicts["policy_version"].iloc[0],
            "policy_sha256": verdicts["policy_sha256"].iloc[0],
            "verdicts": {v: int((verdicts["verdict"] == v).sum()) for v in VERDICTS},
            "blocking_failed": bool(failing["blocking"].any()) if not failing.empty else False,
            "failing": [
                {"rule": r.rule, "slice": r.slice, "group": r.group, "severity": r.severity,
                 "estimate": _round(r.estimate), "ci": [_round(r.lower), _round(r.upper)]}
                for r in failing.itertuples(index=False)
            ],
            "blocking_status": evidence.combine(r.status for r in rules if r.blocking),
            "rules": [_rule_summary(r) for r in rules],
        }
    summary["recall_gap"] = None
    before = _latest_recall_gaps(con, cohort, "candidate")
    if not before.empty:
        cand = latest_verdicts(con, cohort, "candidate")
        failing = cand[(cand["rule"] == "recall_gap") & (cand["verdict"] == "fail")]
        if not failing.empty:
            pick = failing.loc[failing["estimate"].idxmin()]  # the group doing worst
        else:
            judged = cand[(cand["rule"] == "recall_gap") & (cand["verdict"] != "insufficient_evidence")]
            pool = judged if not judged.empty else cand[cand["rule"] == "recall_gap"]
            # the most harmful gap: lowest recall relative to the reference (the rule is one-sided)
            pick = pool.loc[pool["estimate"].idxmin()] if not pool.empty and pool["estimate"].notna().any() else None
        if pick is not None:
            row = before[(before["slice"] == pick["slice"]) & (before["group"] == pick["group"])].iloc[0]
            gap = {"slice": row["slice"], "group": row["group"], "reference": row["reference_group"],
                   "before": {"estimate": _round(row["estimate"]), "ci": [_round(row["lower"]), _round(row["upper"])]},
                   "after": None}
            after = _latest_recall_gaps(con, cohort, "mitigated")
            if not after.empty:
                match = after[(after["slice"] == pick["slice"]) & (after["group"] == pick["group"])]
                if not match.empty:
                    a = match.iloc[0]
                    gap["after"] = {"estimate": _round(a["estimate"]), "ci": [_round(a["lower"]), _round(a["upper"])],
                                    "model": f"{a['model_name']} v{a['model_version']}"}
            summary["recall_gap"] = gap
    try:
        summary["open_incidents"] = incidents.count_open(con, cohort)
    except Exception:  # the incident table may not exist yet
        summary["open_incidents"] = 0
    return json.loads(json.dumps(summary, default=str))

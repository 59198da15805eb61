"""What the fairness assets do, as plain functions (no Dagster), one per asset.

* :func:`audit_candidate` — ``[cohort, fairness_report]``: the policy audit of the latest candidate;
* :func:`analyse_root_cause` — ``[cohort, fairness_root_cause]``: why the failing groups fail;
* :func:`mitigate` — ``[cohort, mitigated_model]``: the mitigations compared, the chosen one
  registered as ``<cohort>_mitigated`` (a challenger) and audited.

Each returns what its asset attaches, ready-made: the rendered Markdown, the report's path and,
for the report, each declared rule's check decided (:mod:`.rule_checks`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

from clinical_mlops.core import evidence, provenance, tracking
from clinical_mlops.core.steps import LOG, StepError, StepLog, report_path
from clinical_mlops.core.warehouse import transaction
from clinical_mlops.core.reporting import png_markdown
from clinical_mlops.fairness import audit as fairness, mitigation, plots, report, root_cause, rule_checks
from clinical_mlops.features import build as features
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy, for_cohort
from clinical_mlops.monitoring import incidents
from clinical_mlops.training import fit, modelling

__all__ = ["NO_FAILING_GROUP", "FairnessReportStep", "MitigationStep", "RootCauseStep", "analyse_root_cause",
           "audit_candidate", "mitigate"]

NO_FAILING_GROUP = "no failing group"


@dataclass(frozen=True)
class FairnessReportStep:
    audit: fairness.FairnessAudit
    audit_id: str | None
    model_label: str
    report_path: Path
    incidents: dict[str, incidents.Incident]
    """Rule name → the incident its blocking failure opened (or found already open)."""
    checks: tuple[rule_checks.RuleCheck, ...]
    """One per rule of the declared policy, in its order."""
    summary_markdown: str
    required_groups_markdown: str
    recall_gaps_markdown: str
    recall_gap_plot_markdown: str
    """The recall-gap forest plot as a Markdown image; empty when the policy has no recall-gap rule."""

    @property
    def bootstrap(self) -> dict:
        a = self.audit
        return {"method": a.bootstrap_method, "replicates": a.n_bootstrap, "seed": a.seed,
                "exact_max_rows": a.exact_max_rows, "score_bins": a.score_bins}

    @property
    def incidents_metadata(self) -> list[dict]:
        return [i.as_metadata() for i in self.incidents.values()]


def audit_candidate(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, n_bootstrap: int | None,
    reports_dir: Path | str, run_id: str | None, log: StepLog = LOG, declared: Policy | None = None,
) -> FairnessReportStep:
    """``[cohort, fairness_report]``: audit the latest candidate at its operating threshold against the
    policy (metrics, disparities with bootstrap CIs, corrected tests, a verdict per rule), store it in
    ``monitoring.fairness_*``, render the HTML report, and open an incident for each blocking rule whose
    status is ``fail`` (insufficient evidence blocks promotion through the stored gate, without an incident).

    ``declared``: the policy whose rules the asset declares checks for (default ``policy``); a declared
    rule missing from ``policy`` is an insufficient-evidence check."""
    declared = declared or policy
    policy = for_cohort(policy, spec)  # the thresholds, with the sensitive attributes of the cohort's source
    model = fit.latest_model_version(con, spec.name, "candidate")
    if model is None:
        raise StepError(f"no candidate model registered for {spec.name}: materialize candidate_model first")
    result, audit_id = fairness.audit_model(con, cohort=spec.name, features_table=spec.features_table,
                                            model=model, policy=policy, n_bootstrap=n_bootstrap)
    label = f"{model['model_name']} v{model['model_version']}"
    path = report_path(reports_dir, spec.name, f"fairness_report_{model['model_name']}_v{model['model_version']}.html")
    path.write_text(report.render_audit_html(result, title=f"Fairness report — {spec.title}", model=label,
                                             policy=policy))
    incident_by_rule = {}
    for outcome in result.outcomes():
        # an incident records a breach shown by the evidence; insufficient evidence blocks promotion
        # (the registry's gate) but is not a breach
        if outcome.status != evidence.FAIL or not outcome.rule.blocking:
            continue
        incident_by_rule[outcome.rule.name] = incidents.open_incident(
            con, policy=policy, severity=outcome.rule.severity, cohort=spec.name, model=label,
            check=f"{spec.name}/fairness_report:{outcome.rule.check_name}",
            evidence={"audit_id": audit_id, "failing_groups": outcome.evidence(), "report": str(path),
                      "dagster_run_id": run_id},
        )
    for rule_name, incident in incident_by_rule.items():
        log.warning(f"{spec.name}: {rule_name} failed; incident {incident.incident_id} "
                    f"({'opened' if incident.created else 'already open'}), owner {incident.owner}")
    recall_rule = next((r for r in result.rules if r.name == "recall_gap"), None)
    plot = "" if recall_rule is None else png_markdown(plots.plot_disparity(result, "recall_gap", recall_rule.bound),
                                                       "recall gap")
    return FairnessReportStep(result, audit_id, label, path, incident_by_rule,
                              rule_checks.rule_checks(result, declared, incident_by_rule),
                              report.summary_markdown(result), report.required_groups_markdown(result),
                              report.recall_gap_markdown(result), plot)


def _failing_targets(con: duckdb.DuckDBPyConnection, cohort: str) -> tuple[dict | None, pd.DataFrame]:
    """The audited candidate and its failing verdict rows, worst first: recall gap failures first, blocking
    rules first, then the groups the policy requires to be assessed, then the largest gap."""
    verdicts = fairness.latest_verdicts(con, cohort, "candidate")
    failing = verdicts[verdicts["verdict"] == "fail"].copy()
    if failing.empty:
        return None, failing
    failing["order"] = (failing["rule"] != "recall_gap").astype(int)
    failing["abs"] = -failing["estimate"].abs()
    failing["required_first"] = failing["required"].fillna(True).astype(bool) if "required" in failing else False
    failing = failing.sort_values(["order", "blocking", "required_first", "abs"], ascending=[True, False, False, True])
    row = failing.iloc[0]
    cursor = con.execute("SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?",
                         [row["model_name"], row["model_version"]])
    names = [d[0] for d in cursor.description]
    found = cursor.fetchall()
    return (dict(zip(names, found[0])) if found else None), failing


def _load(model: dict, tracking_uri: str, artifact_root: Path | str):
    tracking.configure(tracking_uri, Path(artifact_root))
    return tracking.load_model(f"models:/{model['model_name']}/{model['model_version']}")


@dataclass(frozen=True)
class RootCauseStep:
    status: str
    policy_sha256: str
    model_label: str | None = None
    causes: tuple[root_cause.RootCause, ...] = ()
    report_path: Path | None = None
    findings_markdown: str = ""
    """Every analysed group's findings, in Markdown."""

    @property
    def conclusions(self) -> dict[str, str]:
        """``slice=group`` → where the evidence points."""
        return {f"{c.slice}={c.group}": c.conclusion for c in self.causes}


def analyse_root_cause(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, tracking_uri: str,
    artifact_root: Path | str, reports_dir: Path | str, log: StepLog = LOG,
) -> RootCauseStep:
    """``[cohort, fairness_root_cause]``: for up to three failing groups of the latest audit —
    representation against the declared population, label prevalence, missingness, feature shifts,
    per-group permutation importance, calibration and threshold effects — as findings and an HTML report."""
    policy = for_cohort(policy, spec)  # the thresholds, with the sensitive attributes of the cohort's source
    model, failing = _failing_targets(con, spec.name)
    if model is None:
        return RootCauseStep(status=NO_FAILING_GROUP, policy_sha256=policy.sha256)
    train, test = features.load_split_frame(con, spec, "train"), features.load_split_frame(con, spec, "test")
    fitted = _load(model, tracking_uri, artifact_root)
    test_scores = modelling.predict_risk(fitted, test, spec)
    frame = pd.concat([train, test], ignore_index=True)
    targets = failing.drop_duplicates(["slice", "group"]).head(3)
    causes = tuple(
        root_cause.analyse(frame=frame, test=test, test_scores=test_scores, model=fitted, spec=spec, policy=policy,
                           slice_name=r.slice, group=r.group, threshold=float(model["operating_threshold"]))
        for r in targets.itertuples(index=False)
    )
    label = f"{model['model_name']} v{model['model_version']}"
    path = report_path(reports_dir, spec.name,
                       f"fairness_root_cause_{model['model_name']}_v{model['model_version']}.html")
    path.write_text(report.root_cause_html(causes, title=f"Fairness root cause — {spec.title}", model=label,
                                           policy=policy))
    log.info(f"{spec.name}: root cause for {len(causes)} failing group(s)")
    return RootCauseStep(f"{len(causes)} failing group(s) analysed", policy.sha256, label, causes, path,
                         "\n\n".join(c.as_markdown() for c in causes))


@dataclass(frozen=True)
class MitigationStep:
    outcome: Literal["no_failing_group", "none_chosen", "mitigated"]
    status: str
    policy_sha256: str
    comparison: mitigation.Comparison | None = None
    chosen: mitigation.MitigationResult | None = None
    registered: tracking.RegisteredModel | None = None
    target: dict | None = None
    """The group mitigated for: ``slice``, ``group`` and the failing ``rule``."""
    audit: fairness.FairnessAudit | None = None
    """The mitigated model's own audit."""
    audit_id: str | None = None
    recall_gap_before: dict | None = None
    recall_gap_after: dict | None = None
    report_path: Path | None = None
    tradeoff_markdown: str = ""
    """The trade-off table of every option compared, in Markdown (the registered one ticked)."""

    @property
    def target_text(self) -> str:
        """``slice=group (rule)``."""
        t = self.target or {}
        return f"{t['slice']}={t['group']} ({t['rule']})"

    @property
    def recall_gap_before_ci(self) -> str:
        return _interval_text(self.recall_gap_before)

    @property
    def recall_gap_after_ci(self) -> str:
        return _interval_text(self.recall_gap_after)


def _interval_text(gap: dict | None) -> str:
    """``-0.1878 to +0.3736``: a recall gap's interval, signed, four decimals."""
    return "—" if gap is None else f"{gap['lower']:+.4f} to {gap['upper']:+.4f}"


def mitigate(
    con: duckdb.DuckDBPyConnection, spec: CohortSpec, *, policy: Policy, methods: list[str] | None,
    n_bootstrap: int | None, seed: int, eg_max_iter: int, tracking_uri: str, artifact_root: Path | str,
    reports_dir: Path | str, log: StepLog = LOG,
) -> MitigationStep:
    """``[cohort, mitigated_model]``: compare post- and in-processing mitigations for the worst failing
    group on the same test split (trade-off table), register the chosen one as ``<cohort>_mitigated``
    with its test predictions and a ``ml.model_versions`` row, audit it and render the report."""
    policy = for_cohort(policy, spec)  # the thresholds, with the sensitive attributes of the cohort's source
    candidate, failing = _failing_targets(con, spec.name)
    if candidate is None:
        return MitigationStep("no_failing_group", NO_FAILING_GROUP, policy.sha256)
    train, test = features.load_split_frame(con, spec, "train"), features.load_split_frame(con, spec, "test")
    target_row = failing.iloc[0]
    target = {"slice": target_row["slice"], "group": target_row["group"], "rule": target_row["rule"]}
    base = _load(candidate, tracking_uri, artifact_root)
    comparison = mitigation.compare_mitigations(
        base_model=base, base_test_scores=modelling.predict_risk(base, test, spec), train=train, test=test,
        spec=spec, policy=policy, slice_name=target["slice"], group=target["group"],
        operating_threshold=float(candidate["operating_threshold"]), methods=methods or None,
        n_bootstrap=n_bootstrap, seed=seed, eg_max_iter=eg_max_iter,
    )
    if comparison.chosen is None:
        return MitigationStep("none_chosen", comparison.reason, policy.sha256, comparison)
    chosen = comparison.results[comparison.chosen]
    registered = _register_mitigated(spec, candidate, chosen, comparison, target, policy, artifact_root)
    try:
        _record_mitigated(con, spec, candidate, chosen, registered, test)
    except BaseException:
        tracking.delete_model_version(registered.name, registered.version)
        raise
    row = fit.latest_model_version(con, spec.name, "mitigated")
    audited, audit_id = fairness.audit_model(con, cohort=spec.name, features_table=spec.features_table, model=row,
                                             policy=policy, n_bootstrap=n_bootstrap)
    label = f"{registered.name} v{registered.version}"
    path = report_path(reports_dir, spec.name, f"fairness_mitigation_{registered.name}_v{registered.version}.html")
    path.write_text(report.render_audit_html(
        audited, title=f"Mitigated model — {spec.title}", model=label, policy=policy,
        extra_sections=[report.tradeoff_section(comparison.table, comparison.reason, chosen)]))
    before = comparison.audits["none"].disparity(target["slice"], target["group"], "recall_gap")
    after = audited.disparity(target["slice"], target["group"], "recall_gap")
    log.info(f"{spec.name}: registered {label} ({chosen.method}); recall gap for {target['group']} "
             f"{before['estimate']:+.3f} -> {after['estimate']:+.3f}")
    return MitigationStep("mitigated", "mitigated", policy.sha256, comparison, chosen, registered, target, audited,
                          audit_id, before, after, path, report.tradeoff_markdown(comparison.table))


def _register_mitigated(spec: CohortSpec, candidate: dict, result: mitigation.MitigationResult,
                        comparison: mitigation.Comparison, target: dict, policy: Policy,
                        artifact_root: Path | str) -> tracking.RegisteredModel:
    """Log and register the chosen mitigation in MLflow with the candidate's provenance and the trade-off."""
    numeric = list(spec.numeric_features)
    categorical = list(spec.categorical_features) + (list(result.attributes) if result.needs_sensitive_attribute else [])
    code = provenance.code_provenance()
    extracts = json.loads(candidate["input_extracts_json"])
    params = {
        "algorithm": f"{candidate['algorithm']}+{result.method}",
        "mitigation": result.method,
        "mitigation_kind": result.kind,
        "needs_sensitive_attribute": result.needs_sensitive_attribute,
        "sensitive_attributes": ",".join(result.attributes),
        "base_model": f"{candidate['model_name']}/{candidate['model_version']}",
        "constraint": policy.fairness.mitigation.constraint,
        **{k: v for k, v in result.params.items() if not isinstance(v, dict)},
    }
    tradeoff = comparison.table.loc[comparison.table["method"] == result.method].iloc[0]
    tags = {
        **code, "cohort": spec.name, "cohort_spec_sha256": spec.spec_hash, "role": "mitigated",
        "source": spec.source, "source_contract_sha256": spec.contract_sha256,
        "mitigation": result.method, "needs_sensitive_attribute": str(result.needs_sensitive_attribute).lower(),
        "policy_sha256": policy.sha256, "policy_version": policy.version,
        "train_ids_sha256": candidate["train_ids_sha256"], "test_ids_sha256": candidate["test_ids_sha256"],
        "mitigation_target": f"{target['slice']}={target['group']}",
        **{f"data_version.{e['extract_id']}": e["sha256"] for e in extracts},
    }
    return tracking.log_fitted_model(
        experiment=spec.name, artifact_root=Path(artifact_root),
        registered_name=modelling.registered_model_name(spec.name, "mitigated"),
        run_name=f"{spec.name}-mitigated-{result.method}",
        model=result.model, signature=tracking.signature_for(numeric, categorical), params=params,
        metrics={
            "test_auroc": float(tradeoff["auroc"]), "test_recall": float(tradeoff["recall"]),
            "alerts_per_100": float(tradeoff["alerts_per_100"]), "operating_threshold": result.operating_threshold,
            "target_recall_gap": float(tradeoff["recall_gap"]),
        },
        tags=tags,
        json_artifacts={
            "mitigation.json": {"method": result.method, "params": result.params, "target": target,
                                "needs_sensitive_attribute": result.needs_sensitive_attribute,
                                "chosen_because": comparison.reason},
            "tradeoff.json": json.loads(comparison.table.to_json(orient="records")),
        },
        pip_requirements=provenance.pip_requirements(),
    )


def _record_mitigated(con: duckdb.DuckDBPyConnection, spec: CohortSpec, candidate: dict,
                      result: mitigation.MitigationResult, model: tracking.RegisteredModel, test: pd.DataFrame) -> None:
    """Test predictions into ml.predictions and a ml.model_versions row with role 'mitigated'."""
    now = datetime.now(UTC).replace(tzinfo=None)
    scored = pd.DataFrame({"encounter_id": test["encounter_id"].to_numpy(),
                           "label": test["label"].to_numpy().astype("int32"), "score": result.test_scores})
    params = {"algorithm": f"{candidate['algorithm']}+{result.method}", "mitigation": result.method,
              "needs_sensitive_attribute": result.needs_sensitive_attribute, "attributes": list(result.attributes),
              "base_model": f"{candidate['model_name']}/{candidate['model_version']}", **result.params}
    code = provenance.code_provenance()
    con.register("mitigated_scored", scored)
    try:
        with transaction(con):
            con.execute("INSERT INTO ml.predictions SELECT ?, ?, ?, ?, 'test', encounter_id, label, score, ? "
                        "FROM mitigated_scored", [spec.name, model.name, model.version, model.run_id, now])
            con.execute(
                "INSERT INTO ml.model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [now, spec.name, "mitigated", model.name, model.version, model.run_id, params["algorithm"],
                 json.dumps(params, sort_keys=True, default=str), float(result.operating_threshold),
                 candidate["train_rows"], candidate["test_rows"], candidate["input_extracts_json"],
                 candidate["train_ids_sha256"], candidate["test_ids_sha256"], spec.spec_hash,
                 code["git_commit"], code["git_dirty"] == "true", code["lock_sha256"],
                 spec.source, spec.contract_sha256],
            )
    finally:
        con.unregister("mitigated_scored")

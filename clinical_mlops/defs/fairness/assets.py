"""Fairness: subgroup audit with policy gates, root-cause analysis, and a mitigated challenger.

Per cohort:

* ``[cohort, "fairness_report"]`` audits the latest candidate's held-out predictions against
  ``governance/policy.yaml``. One asset check per policy metric (``recall_gap_within_policy`` …):
  blocking with ERROR severity for block_promotion/open_incident metrics, WARN otherwise. A
  failing blocking check opens an incident (owner and deadline from the policy).
* ``[cohort, "fairness_root_cause"]`` and ``[cohort, "mitigated_model"]`` run when a fairness
  check fails (``fairness_check_failed_sensor``) or by hand; with nothing failing they say so.
"""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from clinical_mlops.fairness import audit as fairness, report as fairness_report, mitigation
from clinical_mlops.features import build as features
from clinical_mlops.monitoring import incidents
from clinical_mlops.training import modelling
from clinical_mlops.fairness import root_cause as root_cause_lib
from clinical_mlops.core import provenance, tracking as tracking_lib
from clinical_mlops.training import fit as training
from clinical_mlops.features.cohort import CohortSpec, load_all_cohorts
from clinical_mlops.defs.resources import (
    WAREHOUSE_POOL,
    ReportsResource,
    TrackingResource,
    WarehouseResource,
)
from clinical_mlops.governance.policy import DEFAULT_POLICY_PATH, Policy, load_policy
from clinical_mlops.core.warehouse import transaction

GROUP = "fairness"


class FairnessConfig(dg.Config):
    policy_path: str = ""
    """Policy file; empty means governance/policy.yaml (or CLINICAL_MLOPS_POLICY)."""
    n_bootstrap: int = 0
    """Bootstrap replicates; 0 means the policy's fairness.n_bootstrap."""


class MitigationConfig(FairnessConfig):
    methods: list[str] = []
    """Mitigations to compare; empty means the policy's fairness.mitigation.methods."""
    eg_max_iter: int = 20
    seed: int = 7


def _load(config: FairnessConfig) -> Policy:
    return load_policy(Path(config.policy_path) if config.policy_path else DEFAULT_POLICY_PATH)


def _n_boot(config: FairnessConfig) -> int | None:
    return config.n_bootstrap or None


def _md_image(png: bytes, alt: str) -> str:
    import base64

    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _check_results(result: fairness.FairnessAudit, declared: Policy, incident_by_rule: dict) -> list[dg.AssetCheckResult]:
    results = []
    active = {r.name for r in result.rules}
    for rule in declared.fairness.metrics:
        severity = dg.AssetCheckSeverity.ERROR if rule.blocking else dg.AssetCheckSeverity.WARN
        if rule.name not in active:
            results.append(dg.AssetCheckResult(check_name=rule.check_name, passed=True, severity=severity,
                                               metadata={"note": "metric not in the policy used for this run"}))
            continue
        outcome = result.outcome(rule.name)
        metadata = {
            "policy_version": result.policy_version,
            "policy_sha256": result.policy_sha256,
            "bound": rule.describe(),
            "severity_in_policy": rule.severity,
            "groups_pass": outcome.counts["pass"],
            "groups_fail": outcome.counts["fail"],
            "groups_insufficient_evidence": outcome.counts["insufficient_evidence"],
            "failing_groups": dg.MetadataValue.json(outcome.evidence()),
        }
        if rule.name in incident_by_rule:
            metadata["incident_id"] = incident_by_rule[rule.name].incident_id
            metadata["incident_owner"] = incident_by_rule[rule.name].owner
        description = (
            "; ".join(f"{e['slice']}={e['group']}: {e['estimate']:+.3f} CI [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]"
                      for e in outcome.evidence(5))
            if not outcome.passed else f"no group's interval lies outside the bound ({rule.describe()})"
        )
        results.append(dg.AssetCheckResult(check_name=rule.check_name, passed=outcome.passed, severity=severity,
                                           metadata=metadata, description=description))
    return results


def build_fairness_report(spec: CohortSpec, declared: Policy) -> dg.AssetsDefinition:
    key = dg.AssetKey([spec.name, "fairness_report"])
    check_specs = [
        dg.AssetCheckSpec(rule.check_name, asset=key, blocking=rule.blocking,
                          description=f"{rule.name}: {rule.describe()} for every group with enough evidence "
                                      f"(severity {rule.severity}; fails only when the whole CI is outside the bound).")
        for rule in declared.fairness.metrics
    ]

    @dg.asset(
        key=key,
        deps=[dg.AssetKey([spec.name, "model_evaluation"])],
        group_name=GROUP,
        kinds={"fairlearn", "duckdb"},
        code_version=f"1-policy-{declared.short_hash}",
        pool=WAREHOUSE_POOL,
        check_specs=check_specs,
        description="Subgroup and intersectional audit of the latest candidate at its operating threshold: metrics, "
        "disparities with bootstrap CIs, corrected significance tests, verdicts per policy rule; stored in "
        "monitoring.fairness_metrics / fairness_verdicts with the policy hash, and an HTML report.",
    )
    def fairness_report_asset(
        context: dg.AssetExecutionContext, config: FairnessConfig, warehouse: WarehouseResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        policy = _load(config)
        with warehouse.connect() as con:
            model = training.latest_model_version(con, spec.name, "candidate")
            if model is None:
                raise dg.Failure(f"no candidate model registered for {spec.name}: materialize candidate_model first")
            result, audit_id = fairness.audit_model(con, cohort=spec.name, features_table=spec.features_table,
                                                    model=model, policy=policy, n_bootstrap=_n_boot(config))
            model_label = f"{model['model_name']} v{model['model_version']}"
            path = reports.path(spec.name, f"fairness_report_{model['model_name']}_v{model['model_version']}.html")
            path.write_text(fairness_report.render_audit_html(
                result, title=f"Fairness report — {spec.title}", model=model_label, policy=policy))
            incident_by_rule = {}
            for outcome in result.outcomes():
                if outcome.passed or not outcome.rule.blocking:
                    continue
                incident_by_rule[outcome.rule.name] = incidents.open_incident(
                    con, policy=policy, severity=outcome.rule.severity, cohort=spec.name, model=model_label,
                    check=f"{key.to_user_string()}:{outcome.rule.check_name}",
                    evidence={"audit_id": audit_id, "failing_groups": outcome.evidence(),
                              "report": str(path), "dagster_run_id": context.run_id},
                )
        for rule_name, incident in incident_by_rule.items():
            context.log.warning(f"{spec.name}: {rule_name} failed; incident {incident.incident_id} "
                                f"({'opened' if incident.created else 'already open'}), owner {incident.owner}")
        recall_rule = next((r for r in result.rules if r.name == "recall_gap"), None)
        plots = []
        if recall_rule is not None:
            plots.append(_md_image(fairness_report.plot_disparity(result, "recall_gap", recall_rule.bound), "recall gap"))
        return dg.MaterializeResult(
            metadata={
                "model": model_label,
                "operating_threshold": round(result.threshold, 5),
                "test_rows": result.n,
                "bootstrap": dg.MetadataValue.json({
                    "method": result.bootstrap_method, "replicates": result.n_bootstrap, "seed": result.seed,
                    "exact_max_rows": result.exact_max_rows, "score_bins": result.score_bins}),
                "policy_version": result.policy_version,
                "policy_sha256": result.policy_sha256,
                "audit_id": audit_id,
                "verdicts": dg.MetadataValue.json(result.verdict_counts),
                "blocking_failed": result.blocking_failed,
                "summary": dg.MetadataValue.md(fairness_report.summary_markdown(result)),
                "recall_gaps": dg.MetadataValue.md(fairness_report.recall_gap_markdown(result)),
                "recall_gap_plot": dg.MetadataValue.md("\n\n".join(plots)),
                "report": dg.MetadataValue.path(str(path)),
                "incidents": dg.MetadataValue.json([i.as_metadata() for i in incident_by_rule.values()]),
            },
            check_results=_check_results(result, declared, incident_by_rule),
        )

    return fairness_report_asset


def _failing_targets(con, cohort: str) -> tuple[dict | None, pd.DataFrame]:
    """The audited candidate and its failing verdict rows, worst first (recall gap failures first)."""
    verdicts = fairness.latest_verdicts(con, cohort, "candidate")
    failing = verdicts[verdicts["verdict"] == "fail"].copy()
    if failing.empty:
        return None, failing
    failing["order"] = (failing["rule"] != "recall_gap").astype(int)
    failing["abs"] = -failing["estimate"].abs()
    failing = failing.sort_values(["order", "blocking", "abs"], ascending=[True, False, True])
    row = failing.iloc[0]
    cursor = con.execute("SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?",
                         [row["model_name"], row["model_version"]])
    names = [d[0] for d in cursor.description]
    found = cursor.fetchall()
    return (dict(zip(names, found[0])) if found else None), failing


def _split_frames(con, spec: CohortSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    return features.load_split_frame(con, spec, "train"), features.load_split_frame(con, spec, "test")


def build_root_cause(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "fairness_root_cause"],
        deps=[dg.AssetKey([spec.name, "fairness_report"])],
        group_name=GROUP,
        kinds={"scikit-learn", "duckdb"},
        code_version="1",
        pool=WAREHOUSE_POOL,
        description="For each failing group: representation vs the declared population, label prevalence, "
        "missingness, feature shifts, per-group permutation importance, calibration and threshold effects — as findings.",
    )
    def fairness_root_cause(
        context: dg.AssetExecutionContext, config: FairnessConfig, warehouse: WarehouseResource,
        tracking: TrackingResource, reports: ReportsResource,
    ) -> dg.MaterializeResult:
        policy = _load(config)
        with warehouse.connect(read_only=False) as con:
            model, failing = _failing_targets(con, spec.name)
            if model is None:
                return dg.MaterializeResult(metadata={"status": "no failing group", "policy_sha256": policy.sha256})
            train, test = _split_frames(con, spec)
        tracking.configure()
        fitted = tracking_lib.load_model(f"models:/{model['model_name']}/{model['model_version']}")
        test_scores = modelling.predict_risk(fitted, test, spec)
        frame = pd.concat([train, test], ignore_index=True)
        targets = failing.drop_duplicates(["slice", "group"]).head(3)
        causes = [
            root_cause_lib.analyse(frame=frame, test=test, test_scores=test_scores, model=fitted, spec=spec,
                                        policy=policy, slice_name=r.slice, group=r.group,
                                        threshold=float(model["operating_threshold"]))
            for r in targets.itertuples(index=False)
        ]
        label = f"{model['model_name']} v{model['model_version']}"
        path = reports.path(spec.name, f"fairness_root_cause_{model['model_name']}_v{model['model_version']}.html")
        path.write_text(fairness_report.root_cause_html(causes, title=f"Fairness root cause — {spec.title}",
                                                        model=label, policy=policy))
        context.log.info(f"{spec.name}: root cause for {len(causes)} failing group(s)")
        return dg.MaterializeResult(metadata={
            "status": f"{len(causes)} failing group(s) analysed",
            "model": label,
            "policy_sha256": policy.sha256,
            "findings": dg.MetadataValue.md("\n\n".join(c.as_markdown() for c in causes)),
            "conclusions": dg.MetadataValue.json({f"{c.slice}={c.group}": c.conclusion for c in causes}),
            "report": dg.MetadataValue.path(str(path)),
        })

    return fairness_root_cause


def _register_mitigated(con, spec: CohortSpec, candidate: dict, result: mitigation.MitigationResult,
                        comparison: mitigation.Comparison, target: dict, tracking_resource: TrackingResource,
                        policy: Policy) -> tracking_lib.RegisteredModel:
    tracking_resource.configure()
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
        "mitigation": result.method, "needs_sensitive_attribute": str(result.needs_sensitive_attribute).lower(),
        "policy_sha256": policy.sha256, "policy_version": policy.version,
        "train_ids_sha256": candidate["train_ids_sha256"], "test_ids_sha256": candidate["test_ids_sha256"],
        "mitigation_target": f"{target['slice']}={target['group']}",
        **{f"data_version.{e['extract_id']}": e["sha256"] for e in extracts},
    }
    model = tracking_lib.log_fitted_model(
        experiment=spec.name, artifact_root=Path(tracking_resource.artifact_root),
        registered_name=training.registered_name(spec, "mitigated"), run_name=f"{spec.name}-mitigated-{result.method}",
        model=result.model, signature=tracking_lib.signature_for(numeric, categorical), params=params,
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
    return model


def build_mitigated_model(spec: CohortSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.name, "mitigated_model"],
        deps=[dg.AssetKey([spec.name, "fairness_report"])],
        group_name=GROUP,
        kinds={"fairlearn", "mlflow"},
        code_version="1",
        pool=WAREHOUSE_POOL,
        description="When a fairness check fails: compare post- and in-processing mitigations on the same test split "
        "(trade-off table), register the chosen one as <cohort>_mitigated (a challenger) and audit it.",
    )
    def mitigated_model(
        context: dg.AssetExecutionContext, config: MitigationConfig, warehouse: WarehouseResource,
        tracking: TrackingResource, reports: ReportsResource,
    ) -> dg.MaterializeResult:
        policy = _load(config)
        with warehouse.connect() as con:
            candidate, failing = _failing_targets(con, spec.name)
            if candidate is None:
                return dg.MaterializeResult(metadata={"status": "no failing group", "policy_sha256": policy.sha256})
            train, test = _split_frames(con, spec)
            target_row = failing.iloc[0]
            target = {"slice": target_row["slice"], "group": target_row["group"], "rule": target_row["rule"]}
            tracking.configure()
            base = tracking_lib.load_model(f"models:/{candidate['model_name']}/{candidate['model_version']}")
            base_scores = modelling.predict_risk(base, test, spec)
            comparison = mitigation.compare_mitigations(
                base_model=base, base_test_scores=base_scores, train=train, test=test, spec=spec, policy=policy,
                slice_name=target["slice"], group=target["group"],
                operating_threshold=float(candidate["operating_threshold"]), methods=config.methods or None,
                n_bootstrap=_n_boot(config), seed=config.seed, eg_max_iter=config.eg_max_iter,
            )
            if comparison.chosen is None:
                return dg.MaterializeResult(metadata={"status": comparison.reason})
            chosen = comparison.results[comparison.chosen]
            registered = _register_mitigated(con, spec, candidate, chosen, comparison, target, tracking, policy)
            try:
                _record_mitigated(con, spec, candidate, chosen, registered, test)
            except BaseException:
                tracking_lib.delete_model_version(registered.name, registered.version)
                raise
            row = training.latest_model_version(con, spec.name, "mitigated")
            mitigated_audit, audit_id = fairness.audit_model(con, cohort=spec.name, features_table=spec.features_table,
                                                             model=row, policy=policy, n_bootstrap=_n_boot(config))
        label = f"{registered.name} v{registered.version}"
        path = reports.path(spec.name, f"fairness_mitigation_{registered.name}_v{registered.version}.html")
        note = (f"<p><b>{chosen.method}</b> needs the sensitive attribute(s) {', '.join(chosen.attributes)} at prediction "
                "time.</p>" if chosen.needs_sensitive_attribute else
                f"<p><b>{chosen.method}</b> does not use the sensitive attribute at prediction time.</p>")
        path.write_text(fairness_report.render_audit_html(
            mitigated_audit, title=f"Mitigated model — {spec.title}", model=label, policy=policy,
            extra_sections=[fairness_report.tradeoff_html(comparison.table, comparison.reason), note]))
        before = comparison.audits["none"].disparity(target["slice"], target["group"], "recall_gap")
        after = mitigated_audit.disparity(target["slice"], target["group"], "recall_gap")
        context.log.info(f"{spec.name}: registered {label} ({chosen.method}); recall gap for {target['group']} "
                         f"{before['estimate']:+.3f} -> {after['estimate']:+.3f}")
        return dg.MaterializeResult(
            metadata={
                "status": "mitigated",
                "registered_model": registered.name,
                "model_version": registered.version,
                "mlflow_run": dg.MetadataValue.url(tracking_lib.run_url(tracking.ui_url, registered.experiment_id,
                                                                         registered.run_id)),
                "mitigation": chosen.method,
                "mitigation_kind": chosen.kind,
                "needs_sensitive_attribute": chosen.needs_sensitive_attribute,
                "target": f"{target['slice']}={target['group']} ({target['rule']})",
                "recall_gap_before": round(before["estimate"], 4),
                "recall_gap_before_ci": f"{before['lower']:+.4f} to {before['upper']:+.4f}",
                "recall_gap_after": round(after["estimate"], 4),
                "recall_gap_after_ci": f"{after['lower']:+.4f} to {after['upper']:+.4f}",
                "chosen_because": comparison.reason,
                "tradeoff": dg.MetadataValue.md(fairness_report.tradeoff_markdown(comparison.table)),
                "verdicts_after": dg.MetadataValue.json(mitigated_audit.verdict_counts),
                "audit_id": audit_id,
                "policy_sha256": policy.sha256,
                "report": dg.MetadataValue.path(str(path)),
            },
            tags={"mlflow_run_id": registered.run_id},
        )

    return mitigated_model


def _record_mitigated(con, spec: CohortSpec, candidate: dict, result: mitigation.MitigationResult,
                      model: tracking_lib.RegisteredModel, test: pd.DataFrame) -> None:
    """Test predictions into ml.predictions and a ml.model_versions row with role 'mitigated'."""
    from datetime import UTC, datetime

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
                "INSERT INTO ml.model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [now, spec.name, "mitigated", model.name, model.version, model.run_id, params["algorithm"],
                 json.dumps(params, sort_keys=True, default=str), float(result.operating_threshold),
                 candidate["train_rows"], candidate["test_rows"], candidate["input_extracts_json"],
                 candidate["train_ids_sha256"], candidate["test_ids_sha256"], spec.spec_hash,
                 code["git_commit"], code["git_dirty"] == "true", code["lock_sha256"]],
            )
    finally:
        con.unregister("mitigated_scored")


def fairness_assets(policy: Policy | None = None) -> list[dg.AssetsDefinition]:
    declared = policy or load_policy()
    assets: list[dg.AssetsDefinition] = []
    for spec in load_all_cohorts():
        assets += [build_fairness_report(spec, declared), build_root_cause(spec), build_mitigated_model(spec)]
    return assets


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=fairness_assets())

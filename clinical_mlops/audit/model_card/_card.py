"""The model card (Mitchell et al., 2019): nine sections in Markdown, written from the facts of one version."""

from __future__ import annotations

import math

import pandas as pd

from clinical_mlops.audit import lineage
from clinical_mlops.audit.tags import TAG_CARD, TAG_TRIPOD
from clinical_mlops.audit.model_card._governance import (
    ALERT,
    decision_lines,
    drift_lines,
    fairness_gate_lines,
    waiver_lines,
)
from clinical_mlops.audit.model_card._facts import (
    CARD_METRICS,
    SMALL_CELL,
    Facts,
    split_statement,
    algorithm_text,
    count_text,
    format_value,
    is_synthetic,
    overall_metric,
    sample_text,
    with_ci,
)

__all__ = ["MITCHELL_SECTIONS", "TAG_CARD", "TAG_TRIPOD", "card_markdown", "composition_table", "extract_table",
           "prediction_time_lines"]

MITCHELL_SECTIONS: tuple[str, ...] = (
    "Model Details",
    "Intended Use",
    "Factors",
    "Metrics",
    "Evaluation Data",
    "Training Data",
    "Quantitative Analyses",
    "Ethical Considerations",
    "Caveats and Recommendations",
)


def _of_patients(spec, counts) -> str:
    """`` of N patients`` — nothing for a row split, whose rows are not linked to patients."""
    return "" if spec.split_strategy == "row" else f" of {int(counts['patients']):,} patients"


def _quantitative(facts: Facts) -> tuple[list[str], int]:
    """Section 7: overall and per-subgroup metrics with intervals, then the fairness verdicts."""
    evaluation = facts.evaluation
    if evaluation.empty:
        return ["No evaluation has been recorded for this version yet (`model_evaluation` has not run on it)."], 0
    evaluated_at = evaluation["evaluated_at"].iloc[0]
    lines = [
        f"Held-out test set, evaluated {pd.Timestamp(evaluated_at).strftime('%Y-%m-%d %H:%M:%S')} UTC. "
        "Estimates with 95% bootstrap percentile intervals (patients resampled as rows of the cohort); groups "
        "below the minimum group size get point estimates without an interval; groups with fewer than "
        f"{SMALL_CELL} encounters are suppressed.",
        "",
        "### Overall",
        "",
        "| metric | estimate (95% CI) |",
        "|---|---|",
    ]
    for metric, label in CARD_METRICS:
        row = overall_metric(evaluation, metric)
        if row is not None:
            lines.append(f"| {label} | {with_ci(row['estimate'], row['lower'], row['upper'])} |")
    subgroups_with_ci = 0
    for attribute in [a for a in dict.fromkeys(evaluation["attribute"]) if a != "overall"]:
        subset = evaluation[evaluation["attribute"] == attribute]
        lines += ["", f"### By {attribute}", "",
                  "| group | n | events | " + " | ".join(label for _, label in CARD_METRICS[:6]) + " |",
                  "|---|---|---|" + "---|" * 6]
        for group in sorted(dict.fromkeys(subset["group"])):
            rows = subset[subset["group"] == group].set_index("metric")
            n = int(rows["n"].iloc[0])
            positives = int(rows["n_positive"].iloc[0])
            if n < SMALL_CELL:
                lines.append(f"| {group} | {count_text(n)} | — | " + " | ".join("suppressed" for _ in range(6)) + " |")
                continue
            cells = []
            for metric, _label in CARD_METRICS[:6]:
                if metric in rows.index:
                    r = rows.loc[metric]
                    cells.append(with_ci(r["estimate"], r["lower"], r["upper"]))
                    if metric == "auroc" and not (math.isnan(r["lower"]) or math.isnan(r["upper"])):
                        subgroups_with_ci += 1
                else:
                    cells.append("—")
            lines.append(f"| {group} | {n:,} | {count_text(positives)} | " + " | ".join(cells) + " |")
    if facts.fairness is not None:
        columns, rows = facts.fairness
        lines += ["", "### Fairness verdicts (governance policy)", ""]
        if rows:
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
        else:
            lines.append("The fairness stage has recorded no verdict for this version.")
    return lines, subgroups_with_ci


def composition_table(facts: Facts) -> list[str]:
    """Train and test composition by sensitive attribute as a Markdown table (small cells suppressed)."""
    if facts.demographics is None:
        return ["Composition by sensitive attribute: not available (see caveats)."]
    lines = ["| attribute | group | train n (share) | train events | test n (share) | test events |",
             "|---|---|---|---|---|---|"]
    demo = facts.demographics
    for attribute in dict.fromkeys(demo["attribute"]):
        subset = demo[demo["attribute"] == attribute]
        for group in sorted(dict.fromkeys(subset["group"].astype(str))):
            cells = []
            for side in ("train", "test"):
                row = subset[(subset["side"] == side) & (subset["group"].astype(str) == group)]
                if row.empty:
                    cells += ["0", "0"]
                    continue
                n, events, share = int(row["n"].iloc[0]), int(row["events"].iloc[0]), float(row["share"].iloc[0])
                cells += [f"{count_text(n)} ({share:.1%})" if n >= SMALL_CELL else count_text(n), count_text(events)]
            lines.append(f"| {attribute} | {group} | " + " | ".join(cells) + " |")
    return lines


def extract_table(record: lineage.ModelLineage) -> list[str]:
    """The input extracts (data versions) as a Markdown table: id, sha256, rows landed, landed at."""
    lines = ["| extract | sha256 (data version) | rows landed | landed at (UTC) |", "|---|---|---|---|"]
    for e in record.extracts:
        landed = (e.landed_at or "—")[:19]
        lines.append(f"| {e.extract_id} | `{e.sha256}` | {format_value(e.rows_landed)} | {landed} |")
    return lines


def prediction_time_lines(facts: Facts) -> list[str]:
    """When the model predicts and when its features are complete, as the cohort spec declares it."""
    declared = facts.spec.prediction_time
    if declared is None:
        return [f"**{ALERT} Prediction time: not declared** in the cohort specification, so when the features are "
                "available relative to the prediction is not reported."]
    lines = [f"**Prediction time ({declared.at.replace('_', ' ')}).** {declared.statement}"]
    for moment, names in declared.features_available_at:
        lines += ["", f"- complete at {moment.replace('_', ' ')} ({len(names)}): " + ", ".join(f"`{n}`" for n in names)]
    undeclared = [f for f in facts.spec.features if declared.available_at(f) is None]
    if undeclared:
        lines += ["", f"- availability not declared ({len(undeclared)}): " + ", ".join(f"`{n}`" for n in undeclared)]
    return lines


def _prediction_time_caveats(facts: Facts) -> list[str]:
    declared = facts.spec.prediction_time
    if declared is None:
        return [f"- **{ALERT} Prediction time not declared:** whether every feature is known when the prediction is "
                "made has not been stated."]
    caveats = []
    late = declared.late_features()
    if late:
        caveats.append(f"- **{ALERT} {len(late)} feature(s) are complete only after the prediction time "
                       f"({declared.at.replace('_', ' ')}):** " + ", ".join(f"`{n}`" for n in late) + ".")
    if declared.limitation:
        caveats.append(f"- **{ALERT} Prediction-time limitation:** {declared.limitation}")
    return caveats


def _fairness_caveats(facts: Facts) -> list[str]:
    gate = facts.governance.gate
    if gate is None:
        return [f"- **{ALERT} Fairness was not assessed:** no fairness audit is recorded for this version."]
    caveats = []
    for rule in gate.blocking:
        if rule.status != "pass":
            caveats.append(f"- **{ALERT} Blocking fairness rule {rule.rule}: {rule.status.replace('_', ' ')}** "
                           f"({rule.reason}).")
    small = sorted({f"{f.slice}={f.group}" for r in gate.rules for f in getattr(r, "not_assessable", ())})
    if small:
        caveats.append(f"- Not assessable (too little evidence, acknowledged at promotion): {', '.join(small)}.")
    return caveats


def card_markdown(facts: Facts) -> tuple[str, int]:
    """The card in Markdown, and how many subgroups have an AUROC interval."""
    r, spec = facts.lineage, facts.spec
    counts = facts.split_counts
    threshold_text = (
        f"{spec.threshold_strategy} = {spec.threshold_value} → score ≥ {r.operating_threshold:.5f} is flagged"
    )
    alerts = overall_metric(facts.evaluation, "selection_rate") if not facts.evaluation.empty else None
    owners = getattr(getattr(facts.policy, "owners", None), "as_dict", lambda: {})()
    quantitative, subgroups_with_ci = _quantitative(facts)
    synthetic = is_synthetic(r)
    sections: dict[str, list[str]] = {}
    sections["Model Details"] = [
        "| field | value |", "|---|---|",
        f"| registered model | `{r.model_name}` version {r.model_version} ({r.role}) |",
        f"| registered at (UTC) | {r.registered_at[:19]} |",
        f"| model type | {algorithm_text(r.algorithm)} |",
        f"| hyperparameters | `{', '.join(f'{k}={v}' for k, v in sorted(r.params.items()) if k != 'algorithm')}` |",
        f"| MLflow run | `{r.mlflow_run_id}` |",
        f"| code | git commit `{r.git_commit}`{' (working tree had uncommitted changes)' if r.git_dirty else ''} |",
        f"| environment | `uv.lock` sha256 `{r.lock_sha256}` |",
        f"| cohort specification | `{spec.name}` sha256 `{r.cohort_spec_sha256}` |",
        *([f"| {role.replace('_', ' ')} | {who} |" for role, who in owners.items()]),
        *([f"| governance policy | sha256 `{facts.policy.sha256}` |"] if getattr(facts.policy, "sha256", None) else []),
        "| licence | Apache-2.0 (code); the model inherits the terms of its training data |",
    ]
    sections["Intended Use"] = [
        f"**Primary use.** {spec.intended_use or spec.title}",
        "",
        f"**Output.** Probability of the outcome ({spec.target_definition.rstrip('.')}); operating point {threshold_text}"
        + (f", which flags {alerts['estimate'] * 100:.1f} per 100 patients on the test set." if alerts is not None
           else "."),
        "",
        "**Out of scope.** Use outside the source population and care setting; use as the sole basis of a "
        "clinical decision; denying or rationing care; individual prognosis communicated to patients.",
        "",
        *prediction_time_lines(facts),
        *(["", "**Synthetic data.** This version was trained on synthetic extracts: it demonstrates the "
           "pipeline and must not be used for care."] if synthetic else []),
    ]
    sections["Factors"] = [
        "Relevant factors evaluated: " + ", ".join(f"`{a}`" for a in spec.sensitive_attributes)
        + " (the cohort's declared sensitive attributes). They are used for evaluation only"
        + ("" if not set(spec.sensitive_attributes) & set(spec.features) else
           " — note that " + ", ".join(sorted(set(spec.sensitive_attributes) & set(spec.features))) + " is also a feature")
        + "; age enters the model as `age_years_mid` (band midpoint).",
        "",
        "Instrumentation and environment: routinely collected inpatient EHR fields (admissions, diagnoses "
        "grouped by ICD-9 chapter, laboratory tests, medications, prior utilisation).",
    ]
    sections["Metrics"] = [
        "- Discrimination: AUROC and AUPRC (average precision).",
        "- Calibration: Brier score, expected calibration error (10 equal-width bins), calibration-in-the-large.",
        f"- At the operating point ({threshold_text}): sensitivity (TPR), false-positive rate, PPV and the share "
        "of patients flagged (alerts per 100 patients).",
        "- Uncertainty: nonparametric bootstrap percentile intervals (95%), the same replicates for every subgroup.",
    ]
    train, test = counts.get("train", {}), counts.get("test", {})
    sections["Evaluation Data"] = [
        f"Held out from the same extracts of source {spec.source or 'unrecorded'}: {split_statement(spec)[0]}. "
        f"{r.test_rows:,} encounters"
        + (f"{_of_patients(spec, test)}, {int(test['events']):,} outcome events "
           f"(prevalence {test['prevalence']:.1%})" if test else "")
        + f". Test id-set sha256 `{r.test_ids_sha256}`.",
        "",
        f"The split is random ({split_statement(spec)[1]}), not temporal: performance on future admissions may be "
        "lower.",
    ]
    sections["Training Data"] = [
        f"{r.train_rows:,} encounters"
        + (f"{_of_patients(spec, train)}, {int(train['events']):,} outcome events "
           f"(prevalence {train['prevalence']:.1%})" if train else "")
        + f". Train id-set sha256 `{r.train_ids_sha256}`. {sample_text(facts.sample)} "
        f"Outcome: {spec.target_definition} Source: {spec.target_source}",
        "",
        "Exclusions: " + ("; ".join(f"{e.name} — {e.reason.rstrip('.')}" for e in spec.exclusions) or "none") + ".",
        "",
        "Input extracts (data versions):",
        "",
        *extract_table(r),
        "",
        "Composition by sensitive attribute:",
        "",
        *composition_table(facts),
    ]
    sections["Quantitative Analyses"] = [*quantitative, "", "### Fairness gate (one evidence rule)", "",
                                         *fairness_gate_lines(facts.governance.gate)]
    sections["Ethical Considerations"] = [
        "- Data: de-identified extracts (HIPAA Safe Harbor gate before landing; patient ids replaced by a keyed "
        "HMAC). This card holds aggregates only; counts below 11 are suppressed.",
        "- Sensitive attributes are recorded to measure performance gaps, not to drive predictions; gaps are "
        "tested against the governance policy and block promotion when outside it, or when a blocking rule lacks "
        "evidence and no named approver has waived it.",
        "- Risks: automation bias, and unequal error rates translating into unequal access to transitional "
        "care. Flags are decision support for a care-team review, never a reason to withhold care.",
        "- Race and ethnicity in the source are administratively recorded categories with an `Unknown` level; "
        "performance for small groups is uncertain (wide or absent intervals).",
        "",
        "### Waivers",
        "",
        *waiver_lines(facts.governance.waivers),
        "",
        "### Previous promotion decision",
        "",
        *decision_lines(facts.governance.decision),
        "",
        "### Input drift",
        "",
        *drift_lines(facts.governance.drift),
    ]
    caveats = [
        f"- Internal validation only ({split_statement(spec)[1]}, random, of the same extracts); validate externally "
        "and temporally before clinical use.",
        "- Monitor drift and subgroup performance after deployment; recalibrate or retrain through the change-control "
        "gate when monitoring flags a change.",
        "- Groups below the policy's minimum size have point estimates without intervals: treat them as "
        "insufficient evidence, not as a pass.",
    ]
    caveats += _prediction_time_caveats(facts) + _fairness_caveats(facts)
    if r.git_dirty:
        caveats.append("- The code had uncommitted changes at training time: the git commit alone does not rebuild it.")
    if synthetic:
        caveats.append("- Trained on synthetic data: figures describe the pipeline, not a clinical population.")
    caveats += [f"- {note}" for note in facts.notes]
    sections["Caveats and Recommendations"] = caveats

    lines = [
        f"# Model card: {r.model_name} v{r.model_version}",
        "",
        f"> {spec.title}. Generated from the warehouse and registry records of this version; the sha256 of this "
        f"Markdown file is stored in the audit ledger and as the MLflow model-version tag `{TAG_CARD}`.",
    ]
    for number, title in enumerate(MITCHELL_SECTIONS, 1):
        lines += ["", f"## {number}. {title}", "", *sections[title]]
    return "\n".join(lines) + "\n", subgroups_with_ci

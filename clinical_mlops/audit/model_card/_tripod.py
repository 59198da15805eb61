"""The TRIPOD+AI development report (Collins et al., BMJ 2024): each checklist item filled or marked N/A."""

from __future__ import annotations

from dataclasses import dataclass

from clinical_mlops.audit.model_card._card import composition_table
from clinical_mlops.audit.model_card._facts import (
    Facts,
    algorithm_text,
    is_synthetic,
    overall_metric,
    sample_text,
    with_ci,
)

__all__ = ["TripodItem", "tripod_items", "tripod_markdown"]

@dataclass(frozen=True)
class TripodItem:
    """One checklist item: reported (``applicable``) with its text, or not applicable with the reason."""

    item: str
    topic: str
    applicable: bool
    text: str


def tripod_items(facts: Facts) -> list[TripodItem]:
    """Every TRIPOD+AI item, filled from the facts or marked not applicable with the reason."""
    r, spec = facts.lineage, facts.spec
    counts = facts.split_counts
    ev = facts.evaluation

    def yes(item: str, topic: str, text: str) -> TripodItem:
        return TripodItem(item, topic, True, text)

    def na(item: str, topic: str, reason: str) -> TripodItem:
        return TripodItem(item, topic, False, reason)

    landed = sorted(e.landed_at for e in r.extracts if e.landed_at)
    quarantined = sum(facts.quarantined.values())
    rows_landed = sum(e.rows_landed or 0 for e in r.extracts)
    policy = facts.policy
    fairness_policy = ""
    if policy is not None and getattr(policy, "sha256", None):
        fairness_policy = f" Thresholds and minimum group size come from the governance policy (sha256 `{policy.sha256}`)."
    overall_auroc = overall_metric(ev, "auroc") if not ev.empty else None
    train, test = counts.get("train"), counts.get("test")
    class_weight = r.params.get("class_weight")
    items = [
        yes("1", "Title", f"Development and internal validation of a {r.algorithm.replace('_', ' ')} model predicting "
            f"{spec.target_definition[:1].lower()}{spec.target_definition[1:].rstrip('.')} in "
            f"{spec.title.split(',')[-1].strip()}."),
        na("2", "Abstract", "An automatically generated development report has no abstract; the model card summarises it."),
        yes("3a", "Healthcare context", spec.intended_use or spec.title),
        yes("3b", "Target population and intended users", f"{spec.title}. {spec.intended_use}".strip()),
        yes("3c", "Health inequalities", "Performance is reported per " + ", ".join(spec.sensitive_attributes)
            + " with confidence intervals (item 23a), and gaps are gated by the fairness policy." + fairness_policy),
        yes("4", "Objectives", "Development and internal validation (held-out patients) of one registered model version."),
        yes("5a", "Data sources", f"{len(r.extracts)} extract(s) of the Diabetes 130 schema, each identified by its "
            "sha256: " + ", ".join(f"{e.extract_id} (`{e.sha256[:12]}…`)" for e in r.extracts) + "."),
        yes("5b", "Dates", ("Extracts landed " + (f"{landed[0][:10]} to {landed[-1][:10]}" if landed else "—")
            + ". Encounter dates are not part of the de-identified extract (Safe Harbor removes date elements), so "
              "accrual dates are those of the source release.")),
        yes("6a", "Setting", "Inpatient encounters of diabetic patients in the hospitals of the source extract; the "
            "de-identified extract does not name centres."),
        yes("6b", "Eligibility", "All validated encounters of the listed extracts, excluding: "
            + ("; ".join(f"{e.name} ({e.reason.rstrip('.')})" for e in spec.exclusions) or "none") + "."),
        yes("6c", "Treatments", "No intervention was assigned; diabetes medications and dosage changes recorded "
            "during the stay are predictors."),
        yes("7", "Data preparation", f"Every row passed the same de-identification gate, Pandera validation and "
            f"feature SQL, regardless of group; {quarantined:,} of {rows_landed:,} landed rows were quarantined "
            "with reasons. Preparation was therefore identical across groups."),
        yes("8a", "Outcome", f"{spec.target_definition} Source: {spec.target_source}"),
        na("8b", "Outcome assessment", "The outcome is an administrative field; no assessor interpreted it."),
        na("8c", "Blinding of outcome assessment", "No human assessment of the outcome took place."),
        yes("9a", "Predictors", f"{len(spec.numeric_features)} numeric: " + ", ".join(spec.numeric_features)
            + f"; {len(spec.categorical_features)} categorical: " + ", ".join(spec.categorical_features)
            + ". All are available at discharge."),
        na("9b", "Predictor assessment", "Predictors are routinely recorded EHR fields, not assessed for the study."),
        na("9c", "Blinding of predictor assessment", "Predictors were recorded before and independently of the outcome."),
        yes("10", "Sample size", f"All eligible encounters were used: {r.train_rows:,} for development and "
            f"{r.test_rows:,} for evaluation ({sample_text(facts.sample)[:-1]})"
            + (f", with {int(train['events']):,} and {int(test['events']):,} outcome events" if train and test else "")
            + ". No formal sample-size calculation."),
        yes("11", "Missing data", "Missing categorical values are explicit levels ('Unknown', 'None' = not "
            "measured) set in SQL; rows failing validation are quarantined, not imputed; categories unseen in "
            "training map to an unknown code at prediction time."),
        yes("12a", "Data usage", f"Patient-grouped split ({spec.test_fraction:.0%} of patients to test, seeded hash, "
            f"seed {spec.split_seed}); id-set sha256 train `{r.train_ids_sha256[:16]}…`, test `{r.test_ids_sha256[:16]}…`."),
        yes("12b", "Predictor handling", algorithm_text(r.algorithm) + "."),
        yes("12c", "Model type, building and tuning", f"{algorithm_text(r.algorithm)}; fixed hyperparameters from "
            "configuration, no search: " + ", ".join(f"{k}={v}" for k, v in sorted(r.params.items()) if k != "algorithm")
            + ". A logistic-regression baseline is always trained beside the candidate."),
        na("12d", "Heterogeneity across clusters", "The extract does not identify centres, so no cluster analysis is possible."),
        yes("12e", "Performance measures", "AUROC, AUPRC, Brier score, expected calibration error, calibration-in-"
            "the-large, and sensitivity, FPR, PPV and flagged share at the operating threshold, with 95% bootstrap "
            "percentile intervals overall and per subgroup."),
        yes("12f", "Model updating after evaluation", "None: the evaluated model is the registered artifact."),
        yes("12g", "Calculation of predictions in evaluation", "Scores of the registered pipeline on the held-out "
            "patients, computed at fit time and stored with the version (reproduced bit for bit by `audit replay`)."),
        yes("13", "Class imbalance", f"No resampling; class_weight = {class_weight!r}. "
            + (f"Outcome prevalence {train['prevalence']:.1%} (train), {test['prevalence']:.1%} (test)." if train and test else "")),
        yes("14", "Fairness", "Subgroup performance with intervals for " + ", ".join(spec.sensitive_attributes)
            + (" and fairness verdicts recorded by the fairness stage" if facts.fairness else "")
            + "; the sensitive attributes are not model inputs." + fairness_policy),
        yes("15", "Model output", f"Predicted probability; operating threshold by {spec.threshold_strategy} "
            f"({spec.threshold_value}) fixed on the training data: {r.operating_threshold:.5f}."),
        yes("16", "Development vs evaluation data", "Both come from the same extracts and preparation; evaluation "
            "patients are disjoint from development patients. Composition is compared in item 20c."),
        na("17", "Ethical approval", "Not recorded by the pipeline; the study team states approval for real data."),
        na("18a", "Funding", "Not recorded by the pipeline."),
        na("18b", "Conflicts of interest", "Not recorded by the pipeline."),
        yes("18c", "Protocol", "The cohort specification (sha256 " + f"`{r.cohort_spec_sha256[:16]}…`)"
            + (f" and the governance policy (sha256 `{policy.sha256[:16]}…`)" if fairness_policy else "")
            + " are the protocol, versioned with the code."),
        na("18d", "Registration", "Not registered; internal development report."),
        yes("18e", "Data sharing", "Patient-level data are not shared; extracts are identified by sha256 so an "
            "authorised party can check they hold the same data."),
        yes("18f", "Code sharing", f"Code at git commit `{r.git_commit}`, environment locked by uv.lock "
            f"(sha256 `{r.lock_sha256[:16]}…`); `clinical-mlops audit replay` rebuilds the model."),
        na("19", "Patient and public involvement", "Not recorded by the pipeline."),
        yes("20a", "Flow of participants", f"{rows_landed:,} rows landed → {quarantined:,} quarantined → "
            f"{r.train_rows + r.test_rows:,} eligible encounters after exclusions → {r.train_rows:,} development / "
            f"{r.test_rows:,} evaluation."),
    ]
    composition = "\n\n" + "\n".join(composition_table(facts)) if facts.demographics is not None else ""
    items += [
        (yes if facts.demographics is not None else na)(
            "20b", "Participant characteristics",
            "Composition by sensitive attribute (counts below 11 suppressed):" + composition
            if facts.demographics is not None else "Composition could not be rebuilt (see the model card's caveats)."),
        (yes if facts.demographics is not None else na)(
            "20c", "Development vs evaluation characteristics",
            "See the train and test columns of item 20b." if facts.demographics is not None
            else "Composition could not be rebuilt."),
        yes("21", "Participants and events per analysis", f"Development {r.train_rows:,} encounters, evaluation "
            f"{r.test_rows:,}; per-subgroup n and events in the model card's quantitative analyses."),
        yes("22", "Full model", f"Registered artifact `models:/{r.model_name}/{r.model_version}` (MLflow run "
            f"`{r.mlflow_run_id}`); canonical parameter hashes are compared by `audit replay`."),
        (yes if overall_auroc is not None else na)(
            "23a", "Performance with CIs, including key subgroups",
            (f"AUROC {with_ci(overall_auroc['estimate'], overall_auroc['lower'], overall_auroc['upper'])}; all "
             "measures per subgroup in the model card, section 7.") if overall_auroc is not None
            else "No evaluation recorded for this version yet."),
        na("23b", "Heterogeneity across clusters", "No cluster identifiers (see 12d)."),
        na("24", "Model updating", "This report covers one registered version; updates go through the change-control gate "
           "and get their own report."),
        na("25", "Interpretation", "For the study team; the pipeline reports facts, not conclusions."),
        yes("26", "Limitations", "Internal, non-temporal validation; administrative outcome; subgroup estimates "
            "uncertain for small groups" + ("; synthetic training data" if is_synthetic(r) else "") + "."),
        yes("27a", "Usability with missing data", "Unknown or unseen categorical values are accepted and mapped to an "
            "unknown code; numeric inputs are required by the input schema."),
        yes("27b", "User requirements", "Users see a risk score and a flag at the operating threshold; the model "
            "version and the model card's hash accompany each prediction."),
        na("27c", "Future research", "For the study team."),
    ]
    return items


def tripod_markdown(facts: Facts, items: list[TripodItem]) -> str:
    """The report in Markdown: one table row per item, long items (tables) below it."""
    r = facts.lineage
    applicable = sum(1 for i in items if i.applicable)
    lines = [
        f"# TRIPOD+AI development report: {r.model_name} v{r.model_version}",
        "",
        f"> Items of the TRIPOD+AI checklist (Collins et al., BMJ 2024), filled from the records of this version: "
        f"{applicable} reported, {len(items) - applicable} not applicable with the reason given. Topics are "
        "paraphrased; see the statement for the full wording.",
        "",
        "| item | topic | status | content |",
        "|---|---|---|---|",
    ]
    long_items = []
    for item in items:
        status = "reported" if item.applicable else "N/A"
        text = item.text
        if "\n" in text:
            long_items.append(item)
            text = text.split("\n")[0] + " (table below)"
        lines.append(f"| {item.item} | {item.topic} | {status} | {text.replace('|', '/')} |")
    for item in long_items:
        lines += ["", f"### Item {item.item}: {item.topic}", "", item.text]
    return "\n".join(lines) + "\n"

"""The TRIPOD+AI development report (Collins et al., BMJ 2024): each checklist item derived from recorded facts.

An item is ``reported`` only when the records it needs exist — a warehouse row (``ml.model_versions``,
``raw.extracts``, ``ml.evaluation_metrics``, ``monitoring.fairness_verdicts``, ``monitoring.drift_runs``,
``audit.waivers``), a registry field, a governance-policy entry or a cohort-spec field — and it shows
those facts as aggregates. Without them it is ``not reported``, says which record is missing, and is
counted as such. Items the pipeline never records (funding, ethics, registration…) are not reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from clinical_mlops.audit.model_card._card import composition_table
from clinical_mlops.audit.model_card._facts import (
    Facts,
    split_statement,
    algorithm_text,
    is_synthetic,
    overall_metric,
    sample_text,
    with_ci,
)
from clinical_mlops.core.reporting import format_number

__all__ = ["NOT_REPORTED", "REPORTED", "TripodItem", "TripodStatus", "tripod_items", "tripod_markdown"]

TripodStatus = Literal["reported", "not reported"]
REPORTED: TripodStatus = "reported"
NOT_REPORTED: TripodStatus = "not reported"


@dataclass(frozen=True)
class TripodItem:
    """One checklist item: reported from the recorded facts it names, or not reported with what is missing."""

    item: str
    topic: str
    status: TripodStatus
    text: str
    facts: tuple[str, ...] = ()
    """The recorded facts behind a reported item (or the ones missing behind a not-reported one)."""

    @property
    def reported(self) -> bool:
        return self.status == REPORTED


class _Items:
    """Collects the items: :meth:`fact` is reported only when every named record is present."""

    def __init__(self) -> None:
        self.items: list[TripodItem] = []

    def fact(self, item: str, topic: str, sources: dict[str, bool], text: Callable[[], str]) -> None:
        missing = [label for label, present in sources.items() if not present]
        if missing:
            self.items.append(TripodItem(item, topic, NOT_REPORTED, "Not reported: no " + "; no ".join(missing)
                                         + " is recorded.", tuple(missing)))
        else:
            self.items.append(TripodItem(item, topic, REPORTED, text(), tuple(sources)))

    def unrecorded(self, item: str, topic: str, what: str) -> None:
        self.items.append(TripodItem(item, topic, NOT_REPORTED, f"Not reported: the pipeline records no {what}."))


def _fairness_text(facts: Facts) -> str:
    gate, spec = facts.governance.gate, facts.spec
    inputs = sorted(set(spec.sensitive_attributes) & set(spec.features))
    rules = "; ".join(
        f"{r.rule} ({'blocking' if r.blocking else 'advisory'}): {r.status.replace('_', ' ')}, {r.reason}"
        + "".join(f"; {f.slice}={f.group} gap {format_number(f.estimate, sign=True)} "
                  f"[{format_number(f.lower, sign=True)}, {format_number(f.upper, sign=True)}]" for f in r.failing)
        for r in gate.rules)
    waivers = facts.governance.waivers
    return (f"Fairness audit `{gate.audit_id}` under the governance policy (sha256 `{gate.policy_sha256[:16]}…`), "
            f"groups of {', '.join(spec.sensitive_attributes)} judged on their intervals: {rules or 'no rule recorded'}. "
            + (f"{len(waivers)} waiver(s) recorded. " if waivers else "")
            + ("Sensitive attributes used as inputs: " + ", ".join(inputs) + "." if inputs
               else "The sensitive attributes are not model inputs."))


def _power_text(facts: Facts) -> str:
    gate = facts.governance.gate
    findings = [f for r in (gate.rules if gate else ()) for f in r.insufficient_required
                if getattr(f, "min_detectable_gap", None) is not None]
    if not findings:
        return " No formal sample-size calculation."
    return " Smallest gap detectable with 80% power at the group's size: " + "; ".join(
        f"{f.slice}={f.group} {format_number(f.min_detectable_gap)}" for f in findings) + "."


def _predictors_text(facts: Facts) -> str:
    spec, declared = facts.spec, facts.spec.prediction_time
    late = declared.late_features()
    text = (f"{len(spec.numeric_features)} numeric: " + ", ".join(spec.numeric_features)
            + f"; {len(spec.categorical_features)} categorical: " + ", ".join(spec.categorical_features)
            + f". Prediction time ({declared.at.replace('_', ' ')}): {declared.statement}")
    for moment, names in declared.features_available_at:
        text += f" Complete at {moment.replace('_', ' ')}: {len(names)} feature(s)."
    if late:
        text += f" Complete only after the prediction time: {', '.join(late)}."
    if declared.limitation:
        text += f" Limitation: {declared.limitation}"
    return text


def tripod_items(facts: Facts) -> list[TripodItem]:  # noqa: C901 - one flat list of the checklist
    """Every TRIPOD+AI item, reported from the recorded facts or not reported, naming what is missing."""
    r, spec, gov = facts.lineage, facts.spec, facts.governance
    ev = facts.evaluation
    train, test = facts.split_counts.get("train"), facts.split_counts.get("test")
    landed = sorted(e.landed_at for e in r.extracts if e.landed_at)
    quarantined = sum(facts.quarantined.values())
    rows_landed = sum(e.rows_landed or 0 for e in r.extracts)
    policy_sha = getattr(facts.policy, "sha256", None)
    overall_auroc = overall_metric(ev, "auroc") if not ev.empty else None
    metrics = sorted(set(ev["metric"])) if not ev.empty else []
    out = _Items()
    version = "registered version (ml.model_versions)"
    extracts = "input extract (raw.extracts)"
    evaluation = "evaluation (ml.evaluation_metrics)"
    split = "rebuilt train/test split"
    pt = "prediction time (cohort spec prediction_time)"

    out.fact("1", "Title", {version: True, "cohort spec target.definition": bool(spec.target_definition)},
             lambda: f"Development and internal validation of a {r.algorithm.replace('_', ' ')} model predicting "
                     f"{spec.target_definition[:1].lower()}{spec.target_definition[1:].rstrip('.')} in "
                     f"{spec.title.split(',')[-1].strip()}.")
    out.unrecorded("2", "Abstract", "abstract (the model card summarises the version)")
    out.fact("3a", "Healthcare context", {"cohort spec intended_use": bool(spec.intended_use)}, lambda: spec.intended_use)
    out.fact("3b", "Target population and intended users",
             {"cohort spec title": bool(spec.title), "cohort spec intended_use": bool(spec.intended_use)},
             lambda: f"{spec.title}. {spec.intended_use}")
    out.fact("3c", "Health inequalities", {"cohort spec sensitive_attributes": bool(spec.sensitive_attributes),
                                           "governance policy": bool(policy_sha)},
             lambda: "Performance per " + ", ".join(spec.sensitive_attributes) + " with intervals (item 23a); gaps "
                     f"gated by the governance policy (sha256 `{policy_sha}`).")
    out.fact("4", "Objectives", {version: True},
             lambda: f"Development and internal validation (held-out patients) of {r.model_name} v{r.model_version} "
                     f"({r.role}).")
    out.fact("5a", "Data sources", {extracts: bool(r.extracts)},
             lambda: f"{len(r.extracts)} extract(s), each identified by its sha256: "
                     + ", ".join(f"{e.extract_id} (`{e.sha256[:12]}…`)" for e in r.extracts) + ".")
    out.fact("5b", "Dates", {"landing date (raw.extracts)": bool(landed)},
             lambda: f"Extracts landed {landed[0][:10]} to {landed[-1][:10]}. Encounter dates are not part of the "
                     "de-identified extract, so accrual dates are not recorded.")
    out.fact("6a", "Setting", {"cohort spec title": bool(spec.title), extracts: bool(r.extracts)},
             lambda: f"{spec.title}, from {len(r.extracts)} extract(s); the extracts do not name centres.")
    out.fact("6b", "Eligibility", {"cohort spec exclusions": True},
             lambda: "All validated encounters of the listed extracts, excluding: "
                     + ("; ".join(f"{e.name} ({e.reason.rstrip('.')})" for e in spec.exclusions) or "none") + ".")
    out.unrecorded("6c", "Treatments", "treatment assignment or exposure")
    out.fact("7", "Data preparation", {extracts: bool(r.extracts)},
             lambda: f"Every row passed the same de-identification gate, validation and feature SQL, regardless of "
                     f"group; {quarantined:,} of {rows_landed:,} landed rows were quarantined with reasons.")
    out.fact("8a", "Outcome", {"cohort spec target.definition and target.source": bool(spec.target_source)},
             lambda: f"{spec.target_definition} Source: {spec.target_source}")
    out.fact("8b", "Outcome assessment", {"cohort spec target.sql": bool(spec.target_sql)},
             lambda: f"Derived by the cohort's SQL rule `{spec.target_sql}` from the recorded field; no assessor.")
    out.unrecorded("8c", "Blinding of outcome assessment", "assessment of the outcome by people, blinded or not")
    out.fact("9a", "Predictors", {pt: spec.prediction_time is not None}, lambda: _predictors_text(facts))
    out.fact("9b", "Predictor assessment", {pt: spec.prediction_time is not None, version: True},
             lambda: f"Predictors are computed from the extract by the feature SQL at git commit `{r.git_commit}`, "
                     f"as of the prediction time ({spec.prediction_time.at.replace('_', ' ')}).")
    out.unrecorded("9c", "Blinding of predictor assessment", "assessment of predictors by people, blinded or not")
    out.fact("10", "Sample size", {version: True},
             lambda: f"All eligible encounters were used: {r.train_rows:,} for development and {r.test_rows:,} for "
                     f"evaluation ({sample_text(facts.sample)[:-1]})"
                     + (f", with {int(train['events']):,} and {int(test['events']):,} outcome events"
                        if train and test else "") + "." + _power_text(facts))
    out.fact("11", "Missing data", {extracts: bool(r.extracts)},
             lambda: f"Rows failing validation are quarantined, not imputed ({quarantined:,} of {rows_landed:,}); "
                     "missing categorical values are explicit levels; unseen categories map to an unknown code.")
    out.fact("12a", "Data usage", {"cohort spec split": True, version: True},
             lambda: f"{split_statement(spec)[0][:1].upper()}{split_statement(spec)[0][1:]} to test; id-set sha256 train `{r.train_ids_sha256[:16]}…`, test "
                     f"`{r.test_ids_sha256[:16]}…`.")
    out.fact("12b", "Predictor handling", {version: True}, lambda: algorithm_text(r.algorithm) + ".")
    out.fact("12c", "Model type, building and tuning", {"hyperparameters (ml.model_versions)": bool(r.params)},
             lambda: f"{algorithm_text(r.algorithm)}; hyperparameters as recorded: "
                     + ", ".join(f"{k}={v}" for k, v in sorted(r.params.items()) if k != "algorithm") + ".")
    out.unrecorded("12d", "Heterogeneity across clusters", "centre or cluster identifier")
    out.fact("12e", "Performance measures", {evaluation: not ev.empty},
             lambda: f"{', '.join(metrics)}, with 95% bootstrap percentile intervals overall and per subgroup.")
    out.fact("12f", "Model updating after evaluation", {"mitigated challenger (ml.model_versions)": bool(gov.mitigations)},
             lambda: "Fairness mitigation registered from this version: "
                     + "; ".join(f"{m['model']} ({m['method']})" for m in gov.mitigations) + ".")
    out.fact("12g", "Calculation of predictions in evaluation",
             {"stored held-out predictions (ml.predictions)": facts.test_predictions > 0},
             lambda: f"{facts.test_predictions:,} held-out scores of the registered pipeline, stored with the version.")
    out.fact("13", "Class imbalance", {"class_weight (ml.model_versions)": "class_weight" in r.params, split: bool(train)},
             lambda: f"No resampling; class_weight = {r.params.get('class_weight')!r}. Outcome prevalence "
                     f"{train['prevalence']:.1%} (train), {test['prevalence']:.1%} (test).")
    out.fact("14", "Fairness", {"fairness audit (monitoring.fairness_verdicts)": gov.gate is not None},
             lambda: _fairness_text(facts))
    out.fact("15", "Model output", {"operating threshold (ml.model_versions)": True},
             lambda: f"Predicted probability; operating threshold by {spec.threshold_strategy} "
                     f"({spec.threshold_value}) fixed on the training data: {r.operating_threshold:.5f}.")
    out.fact("16", "Development vs evaluation data", {split: bool(train and test)},
             lambda: f"Same extracts and preparation; patients disjoint; prevalence {train['prevalence']:.1%} vs "
                     f"{test['prevalence']:.1%}; composition in item 20b.")
    out.unrecorded("17", "Ethical approval", "ethical approval")
    out.unrecorded("18a", "Funding", "funding")
    out.unrecorded("18b", "Conflicts of interest", "conflicts of interest")
    out.fact("18c", "Protocol", {"cohort spec sha256 (ml.model_versions)": bool(r.cohort_spec_sha256),
                                 "governance policy": bool(policy_sha)},
             lambda: f"The cohort specification (sha256 `{r.cohort_spec_sha256[:16]}…`) and the governance policy "
                     f"(sha256 `{policy_sha[:16]}…`), versioned with the code.")
    out.unrecorded("18d", "Registration", "study registration")
    out.fact("18e", "Data sharing", {extracts: bool(r.extracts)},
             lambda: "Patient-level data are not shared; the extracts' sha256 let an authorised party check they "
                     "hold the same data.")
    out.fact("18f", "Code sharing", {"git commit and uv.lock sha256 (ml.model_versions)": bool(r.git_commit)},
             lambda: f"Code at git commit `{r.git_commit}`, environment locked by uv.lock (sha256 "
                     f"`{r.lock_sha256[:16]}…`); `clinical-mlops audit replay` rebuilds the model.")
    out.unrecorded("19", "Patient and public involvement", "patient and public involvement")
    out.fact("20a", "Flow of participants", {extracts: bool(r.extracts)},
             lambda: f"{rows_landed:,} rows landed → {quarantined:,} quarantined → {r.train_rows + r.test_rows:,} "
                     f"eligible encounters after exclusions → {r.train_rows:,} development / {r.test_rows:,} evaluation.")
    out.fact("20b", "Participant characteristics", {"composition by sensitive attribute": facts.demographics is not None},
             lambda: "Composition by sensitive attribute (counts below 11 suppressed):\n\n"
                     + "\n".join(composition_table(facts)))
    out.fact("20c", "Development vs evaluation characteristics",
             {"composition by sensitive attribute": facts.demographics is not None},
             lambda: "See the train and test columns of item 20b.")
    out.fact("21", "Participants and events per analysis", {version: True, split: bool(train and test)},
             lambda: f"Development {r.train_rows:,} encounters ({int(train['events']):,} events), evaluation "
                     f"{r.test_rows:,} ({int(test['events']):,} events); per subgroup in the model card, section 7.")
    out.fact("22", "Full model", {"MLflow run (ml.model_versions)": bool(r.mlflow_run_id)},
             lambda: f"Registered artifact `models:/{r.model_name}/{r.model_version}` (MLflow run "
                     f"`{r.mlflow_run_id}`).")
    out.fact("23a", "Performance with CIs, including key subgroups", {"overall AUROC (ml.evaluation_metrics)":
                                                                      overall_auroc is not None},
             lambda: f"AUROC {with_ci(overall_auroc['estimate'], overall_auroc['lower'], overall_auroc['upper'])}; "
                     "all measures per subgroup in the model card, section 7.")
    out.unrecorded("23b", "Heterogeneity across clusters", "centre or cluster identifier")
    out.fact("24", "Model updating", {"mitigated challenger (ml.model_versions)": bool(gov.mitigations)},
             lambda: "Updated model(s) with their own evaluation and card: "
                     + "; ".join(m["model"] for m in gov.mitigations) + ".")
    out.unrecorded("25", "Interpretation", "interpretation (for the study team)")
    out.fact("26", "Limitations", {"cohort spec split": True},
             lambda: f"Internal, non-temporal validation ({split_statement(spec)[1]}); administrative outcome"
                     + ("; synthetic training data" if is_synthetic(r) else "")
                     + ("; prediction time not declared" if spec.prediction_time is None else
                        f"; {spec.prediction_time.limitation}" if spec.prediction_time.limitation else "") + ".")
    out.fact("27a", "Usability with poor-quality or missing input",
             {"drift report (monitoring.drift_runs)": gov.drift is not None},
             lambda: f"New extracts pass validation (rows failing it are quarantined) and are compared with the "
                     f"training reference: newest drift report on `{gov.drift.get('extract_id')}`, "
                     f"{gov.drift.get('features_drifted')} of {gov.drift.get('features_tested')} features drifted, "
                     f"{'dataset drift' if gov.drift.get('dataset_drift') else 'no dataset drift'}.")
    out.fact("27b", "User requirements", {"operating threshold (ml.model_versions)": True,
                                          "cohort spec intended_use": bool(spec.intended_use)},
             lambda: f"Users see a risk score and a flag at threshold {r.operating_threshold:.5f} "
                     f"({spec.threshold_strategy} {spec.threshold_value}).")
    out.unrecorded("27c", "Future research", "future research plan (for the study team)")
    return out.items


def tripod_markdown(facts: Facts, items: list[TripodItem]) -> str:
    """The report in Markdown: the counts computed from the items, one table row per item, long items below."""
    r = facts.lineage
    reported = sum(1 for i in items if i.reported)
    lines = [
        f"# TRIPOD+AI development report: {r.model_name} v{r.model_version}",
        "",
        f"> Items of the TRIPOD+AI checklist (Collins et al., BMJ 2024), derived from the records of this version: "
        f"**{reported} reported** from recorded facts, **{len(items) - reported} not reported** (no recorded fact "
        "behind them). Topics are paraphrased; see the statement for the full wording.",
        "",
        "| item | topic | status | content | recorded facts |",
        "|---|---|---|---|---|",
    ]
    long_items = []
    for item in items:
        text = item.text
        if "\n" in text:
            long_items.append(item)
            text = text.split("\n")[0] + " (table below)"
        sources = "; ".join(item.facts) if item.reported else "—"
        lines.append(f"| {item.item} | {item.topic} | {item.status} | {text.replace('|', '/')} | {sources} |")
    for item in long_items:
        lines += ["", f"### Item {item.item}: {item.topic}", "", item.text]
    return "\n".join(lines) + "\n"

"""Root-cause analysis of a failing fairness verdict: data, features, model or threshold?

For one failing group (against its reference group) the analysis looks at, in order:

1. **Representation** — the group's share of the cohort against the policy's declared reference
   population.
2. **Label prevalence** — recorded outcome rates (a much lower rate with similar features hints at
   under-recorded outcomes, i.e. label bias).
3. **Missingness** — how often laboratory results, specialty, payer and diagnoses are unrecorded.
4. **Feature distributions** — standardised mean differences of the numeric features (recording
   gaps such as unseen prior utilisation show up here).
5. **Per-group feature importance** — permutation importance (AUROC drop) on the group's and the
   reference's held-out rows. A pipeline whose preprocessing encodes each column on its own is
   encoded once and its final estimator scored on permuted encoded columns: the same permutations
   and the same scores as permuting the raw columns (see :func:`modelling.encoded_for_permutation`);
   the permuted copies are scored in a few stacked predictions (:mod:`clinical_mlops.training.importance`,
   sklearn's permutations and scores).
6. **Per-group calibration** and **threshold effects** — whether the group's positives score lower,
   and which group-specific threshold would restore the reference recall.

Each step yields :class:`Finding` objects in plain language; ``conclusion`` says where the
evidence points. All numbers are aggregates over groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinical_mlops.fairness import audit as fairness
from clinical_mlops.training import importance as importance_of, modelling
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.fairness.mitigation import sensitive_feature
from clinical_mlops.governance.policy import Policy

__all__ = ["Finding", "RootCause", "UNRECORDED", "analyse"]

UNRECORDED = frozenset({"?", "None", "Unknown", "missing", "", "NA"})


@dataclass(frozen=True)
class Finding:
    category: str  # representation | labels | missingness | features | importance | calibration | threshold
    concern: bool
    title: str
    detail: str
    evidence: dict = field(default_factory=dict)


@dataclass
class RootCause:
    slice: str
    group: str
    reference: str
    findings: list[Finding]
    conclusion: str
    tables: dict[str, pd.DataFrame]

    def as_markdown(self) -> str:
        lines = [f"### {self.slice} = {self.group} (reference {self.reference})", "", f"**Conclusion:** {self.conclusion}", ""]
        for f in self.findings:
            mark = "⚠️" if f.concern else "·"
            lines.append(f"- {mark} **{f.title}** — {f.detail}")
        return "\n".join(lines)


def _z_p(x1: float, n1: float, x2: float, n2: float) -> float:
    return fairness.two_proportion_z_test(x1, n1, x2, n2)


def _unrecorded(series: pd.Series) -> np.ndarray:
    return series.astype("object").isna().to_numpy() | series.astype(str).isin(UNRECORDED).to_numpy()


def analyse(
    *,
    frame: pd.DataFrame,
    test: pd.DataFrame,
    test_scores: np.ndarray,
    model,
    spec: CohortSpec,
    policy: Policy,
    slice_name: str,
    group: str,
    threshold: float,
    seed: int = 7,
    importance_rows: int = 1500,
    importance_repeats: int = 3,
) -> RootCause:
    """Root cause for ``group`` of ``slice_name``; ``frame`` is the whole cohort (train and test)."""
    attributes = tuple(slice_name.split(fairness.INTERSECTION_SEPARATOR))
    reference = fairness.INTERSECTION_SEPARATOR.join(policy.fairness.attribute(a).reference for a in attributes)
    groups_all = sensitive_feature(frame, attributes)
    in_g, in_r = (groups_all == group).to_numpy(), (groups_all == reference).to_numpy()
    findings: list[Finding] = []
    tables: dict[str, pd.DataFrame] = {}
    n_g, n_r, n = int(in_g.sum()), int(in_r.sum()), len(frame)

    # 1. representation
    share = n_g / n if n else float("nan")
    declared = policy.fairness.attribute(attributes[0]).reference_population.get(group) if len(attributes) == 1 else None
    if declared:
        ratio = share / declared
        findings.append(Finding(
            "representation", ratio < 0.8,
            "Representation" + (" below the reference population" if ratio < 0.8 else " in line with the reference population"),
            f"{share:.1%} of the cohort ({n_g} encounters) against {declared:.1%} declared (ratio {ratio:.2f}).",
            {"share": share, "declared": declared, "ratio": ratio, "n": n_g},
        ))
    else:
        findings.append(Finding("representation", n_g < policy.fairness.min_group_size, "Representation",
                                f"{share:.1%} of the cohort ({n_g} encounters); no reference population declared.",
                                {"share": share, "n": n_g}))

    # 2. label prevalence
    y = frame["label"].to_numpy()
    prev_g = float(y[in_g].mean()) if n_g else float("nan")
    prev_r = float(y[in_r].mean()) if n_r else float("nan")
    p = _z_p(y[in_g].sum(), n_g, y[in_r].sum(), n_r)
    concern = (not math.isnan(p)) and p < 0.05 and abs(prev_g - prev_r) >= 0.02
    findings.append(Finding(
        "labels", concern,
        "Recorded outcome rate differs" if concern else "Recorded outcome rate similar",
        f"{prev_g:.1%} in the group vs {prev_r:.1%} in the reference (p={p:.2g})."
        + (" A markedly lower recorded rate with similar features suggests under-recorded outcomes (label bias)."
           if concern and prev_g < prev_r else ""),
        {"prevalence": prev_g, "reference_prevalence": prev_r, "p_value": p},
    ))

    # 3. missingness
    rows = []
    for column in spec.categorical_features:
        miss = _unrecorded(frame[column])
        rows.append((column, float(miss[in_g].mean()), float(miss[in_r].mean()),
                     _z_p(miss[in_g].sum(), n_g, miss[in_r].sum(), n_r)))
    for column in (c for c in spec.numeric_features if c.endswith("_measured")):
        miss = frame[column].to_numpy() == 0
        rows.append((column.replace("_measured", " not measured"), float(miss[in_g].mean()),
                     float(miss[in_r].mean()), _z_p(miss[in_g].sum(), n_g, miss[in_r].sum(), n_r)))
    missing = pd.DataFrame(rows, columns=["feature", "group_rate", "reference_rate", "p_value"])
    missing["difference"] = missing["group_rate"] - missing["reference_rate"]
    missing = missing.reindex(missing["difference"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    tables["missingness"] = missing
    flagged = missing[(missing["difference"].abs() >= 0.05) & (missing["p_value"] < 0.05)]
    findings.append(Finding(
        "missingness", not flagged.empty,
        "Missingness differs by group" if not flagged.empty else "Missingness similar",
        ("; ".join(f"{r.feature}: {r.group_rate:.0%} vs {r.reference_rate:.0%}" for r in flagged.head(4).itertuples())
         or "no unrecorded-value rate differs by 5 points or more."),
        {"features": flagged["feature"].tolist()},
    ))

    # 4. feature distributions (standardised mean differences)
    rows = []
    for column in spec.numeric_features:
        x = frame[column].to_numpy(dtype=float)
        a, b = x[in_g], x[in_r]
        sd = math.sqrt((np.var(a) + np.var(b)) / 2) if a.size and b.size else 0.0
        smd = (a.mean() - b.mean()) / sd if sd > 0 else 0.0
        rows.append((column, float(a.mean()) if a.size else np.nan, float(b.mean()) if b.size else np.nan, smd))
    shift = pd.DataFrame(rows, columns=["feature", "group_mean", "reference_mean", "smd"])
    shift = shift.reindex(shift["smd"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    tables["feature_shift"] = shift
    big = shift[shift["smd"].abs() >= 0.2]

    # 5. per-group permutation importance on held-out rows
    groups_test = sensitive_feature(test, attributes)
    rng = np.random.default_rng(seed)
    importance = {}
    for label in (group, reference):
        idx = np.flatnonzero((groups_test == label).to_numpy())
        if idx.size > importance_rows:
            idx = np.sort(rng.choice(idx, importance_rows, replace=False))
        y_t = test["label"].to_numpy()[idx]
        if idx.size < 20 or y_t.min() == y_t.max():
            continue
        X = modelling.model_input(test.iloc[idx], spec)
        estimator, matrix = modelling.encoded_for_permutation(model, X)
        result = importance_of.permutation_importance(estimator, matrix, y_t, n_repeats=importance_repeats,
                                                      random_state=seed)
        importance[label] = pd.Series(result.importances_mean, index=X.columns)
    if importance:
        imp = pd.DataFrame(importance).fillna(0.0)
        order = imp.abs().max(axis=1).sort_values(ascending=False).index
        tables["importance"] = imp.loc[order].reset_index().rename(columns={"index": "feature"})
        top_ref = list(imp[reference].sort_values(ascending=False).index[:5]) if reference in imp else []
        shifted_important = [f for f in top_ref if f in set(big["feature"])]
        detail = "; ".join(
            f"{r.feature}: mean {r.group_mean:.2f} vs {r.reference_mean:.2f} (SMD {r.smd:+.2f})" for r in big.head(4).itertuples()
        ) or "no numeric feature differs by 0.2 standard deviations or more."
        findings.append(Finding(
            "features", bool(shifted_important),
            "Important features are distributed differently" if shifted_important else "Feature distributions",
            detail + (f" Among the reference's five most important features: {', '.join(shifted_important)}."
                      if shifted_important else ""),
            {"shifted_important": shifted_important,
             "means": {r.feature: [float(r.group_mean), float(r.reference_mean)] for r in big.itertuples()
                       if r.feature in shifted_important}},
        ))
        if group in imp and reference in imp:
            top_g = imp[group].sort_values(ascending=False).index[:5].tolist()
            findings.append(Finding(
                "importance", bool(set(top_ref) - set(top_g)),
                "Per-group feature importance (permutation, AUROC drop)",
                f"group: {', '.join(top_g)}; reference: {', '.join(top_ref)}.",
                {"group_top": top_g, "reference_top": top_ref},
            ))
    else:
        findings.append(Finding("features", not big.empty, "Feature distributions",
                                "; ".join(f"{r.feature} SMD {r.smd:+.2f}" for r in big.head(4).itertuples())
                                or "no large differences.", {}))

    # 6. calibration and threshold effects on the held-out rows
    y_test = test["label"].to_numpy()
    g_t, r_t = (groups_test == group).to_numpy(), (groups_test == reference).to_numpy()
    citl_g = float(test_scores[g_t].mean() - y_test[g_t].mean()) if g_t.any() else float("nan")
    citl_r = float(test_scores[r_t].mean() - y_test[r_t].mean()) if r_t.any() else float("nan")
    cal_bound = next((m.bound for m in policy.fairness.metrics if m.name == "calibration_gap"), 0.05)
    findings.append(Finding(
        "calibration", abs(citl_g - citl_r) > cal_bound,
        "Calibration differs" if abs(citl_g - citl_r) > cal_bound else "Calibration similar",
        f"mean predicted minus observed risk: {citl_g:+.3f} in the group vs {citl_r:+.3f} in the reference"
        + (" (the model over-predicts for the group relative to its recorded outcomes)" if citl_g - citl_r > cal_bound else ""),
        {"calibration": citl_g, "reference_calibration": citl_r},
    ))
    pos_g, pos_r = test_scores[g_t & (y_test == 1)], test_scores[r_t & (y_test == 1)]
    if pos_g.size and pos_r.size:
        rec_g, rec_r = float((pos_g >= threshold).mean()), float((pos_r >= threshold).mean())
        k = int(math.ceil(rec_r * pos_g.size))
        needed = float(np.sort(pos_g)[pos_g.size - max(k, 1)])
        alerts_now = float((test_scores[g_t] >= threshold).mean())
        alerts_then = float((test_scores[g_t] >= needed).mean())
        findings.append(Finding(
            "threshold", rec_g < rec_r - 0.05,
            "Threshold effect",
            f"at the operating threshold {threshold:.3f} recall is {rec_g:.2f} vs {rec_r:.2f}; the group's positives "
            f"score lower (median {np.median(pos_g):.3f} vs {np.median(pos_r):.3f}). A group threshold of {needed:.3f} "
            f"would restore recall {rec_r:.2f}, raising the group's alert rate from {alerts_now:.0%} to {alerts_then:.0%}.",
            {"recall": rec_g, "reference_recall": rec_r, "threshold_for_reference_recall": needed},
        ))

    return RootCause(slice_name, group, reference, findings, _conclusion(findings), tables)


def _named_features(findings: list[Finding]) -> str:
    """``: number_inpatient recorded lower for the group (mean 0.12 vs 0.64), …`` — the shifted important features."""
    named = []
    for f in findings:
        for feature, (group_mean, reference_mean) in (f.evidence.get("means") or {}).items():
            direction = "lower" if group_mean < reference_mean else "higher"
            named.append(f"{feature} recorded {direction} for the group (mean {group_mean:.2f} vs {reference_mean:.2f})")
    return (": " + "; ".join(named)) if named else ""


def _conclusion(findings: list[Finding]) -> str:
    concerns = {f.category for f in findings if f.concern}
    parts = []
    if "labels" in concerns:
        parts.append("the data's recorded outcomes (label prevalence differs)")
    if concerns & {"missingness", "features"}:
        parts.append("the features (recording gaps or shifted distributions in features the model relies on"
                     + _named_features(findings) + ")")
    if "representation" in concerns:
        parts.append("under-representation in the cohort")
    if "calibration" in concerns:
        parts.append("the model's calibration for the group")
    if "threshold" in concerns and not parts:
        parts.append("the single operating threshold (the group's positives score lower without a visible data cause)")
    if not parts:
        return "no single cause stands out; the gap may be sampling variation or an interaction not examined here."
    threshold_note = (" A group-specific threshold (post-processing) can close the recall gap at the cost of the "
                      "sensitive attribute being needed at prediction time." if "threshold" in concerns else "")
    return "The evidence points to " + "; ".join(parts) + "." + threshold_note

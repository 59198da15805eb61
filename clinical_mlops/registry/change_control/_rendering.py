"""The change-control report for people, as Markdown."""

from __future__ import annotations

import math

from clinical_mlops.core.reporting import format_number
from clinical_mlops.registry.change_control._decision import Decision
from clinical_mlops.registry.change_control._report import ChangeControlReport

__all__ = ["render_markdown"]


def _ci(lo: float, hi: float, sign: bool = False) -> str:
    """``lo to hi``, or ``—`` when there is no interval."""
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return "—"
    return f"{format_number(lo, sign=sign)} to {format_number(hi, sign=sign)}"


def render_markdown(report: ChangeControlReport, decision: Decision) -> str:
    """The report for people: decision, criteria, change, impact, fairness, drift, diff."""
    ch, cp = report.challenger, report.champion
    title = f"{ch.label} (challenger) vs {cp.label} (champion)" if cp else f"{ch.label} (no champion yet)"
    verdict = "PROMOTION ALLOWED" if decision.passed else "PROMOTION BLOCKED"
    lines = [
        f"# Change control — {report.cohort}: {title}",
        "",
        f"**{verdict}** — {decision.summary}",
        "",
        f"Policy {report.policy_version} (sha256 `{report.policy_sha256[:12]}`), generated {report.created_at}. "
        f"Mode: {decision.mode.replace('_', ' ')}.",
        "",
        "## Acceptance criteria",
        "",
        "| criterion | result | detail |",
        "|---|---|---|",
        *(f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in decision.criteria),
    ]
    if cp is not None:
        lines += ["", "## Modification and envelope", ""]
        lines += [f"- **{m.kind}**: {m.detail}" for m in report.modifications]
        if report.envelope is not None:
            lines += ["", f"Envelope: {report.envelope.describe()}."]
    lines += [
        "", "## Held-out performance (same rows for both models)", "",
        f"{report.evaluation_rows:,} test-split encounters ({report.evaluation_positives:,} positive; id-set sha256 "
        f"`{report.evaluation_ids_sha256[:12]}`); paired bootstrap, {report.n_boot} replicates, seed {report.seed}, "
        f"{report.confidence:.0%} intervals. Recall, FPR and alert rate at each model's own operating threshold.",
        "",
        "| metric | champion | challenger (CI) | Δ challenger − champion (CI) |",
        "|---|---|---|---|",
    ]
    overall = report.metrics[report.metrics["attribute"] == "overall"]
    for r in overall.itertuples(index=False):
        lines.append(f"| {r.metric} | {format_number(r.champion)} | {format_number(r.challenger)} "
                     f"({_ci(r.challenger_lower, r.challenger_upper)}) "
                     f"| {format_number(r.delta, sign=True)} ({_ci(r.lower, r.upper, sign=True)}) |")
    lines += ["", "### Per subgroup (AUROC and recall)", "",
              "| attribute | group | n | metric | champion | challenger | Δ (CI) |", "|---|---|---|---|---|---|---|"]
    groups = report.metrics[(report.metrics["attribute"] != "overall") & report.metrics["metric"].isin(["auroc", "recall"])]
    for r in groups.itertuples(index=False):
        if r.n < report.min_group_size:  # too few for a verdict: no estimates shown
            lines.append(f"| {r.attribute} | {r.group} | {r.n} | {r.metric} | — | — | insufficient evidence "
                         f"(n < {report.min_group_size}) |")
            continue
        lines.append(f"| {r.attribute} | {r.group} | {r.n} | {r.metric} | {format_number(r.champion)} "
                     f"| {format_number(r.challenger)} "
                     f"| {format_number(r.delta, sign=True)} ({_ci(r.lower, r.upper, sign=True)}) |")
    fair = report.fairness
    lines += ["", "## Fairness verdicts", "", f"Source: {fair.source}.",
              f"- champion blocking failures: {', '.join(fair.champion_failures) or 'none'}",
              f"- challenger blocking failures: {', '.join(fair.challenger_failures) or 'none'}",
              f"- new: {', '.join(fair.new_failures) or 'none'}; resolved: {', '.join(fair.resolved) or 'none'}",
              *(f"- note: {n}" for n in fair.notes)]
    lines += ["", "## Drift context", ""]
    if report.drift:
        lines += ["| extract | dataset drift | drifted features | top drifted | challenger trained on it |",
                  "|---|---|---|---|---|"]
        for d in report.drift:
            lines.append(f"| {d['extract_id']} | {'yes' if d['dataset_drift'] else 'no'} | "
                         f"{d['features_drifted']}/{d['features_tested']} ({d['drift_share']:.0%}) | "
                         f"{', '.join(d['top_drifted']) or '—'} | {'yes' if d['challenger_trained_on_it'] else 'no'} |")
    else:
        lines.append("No drift report recorded for this cohort.")
    lines += ["", "## What differs", "", "| | champion | challenger |", "|---|---|---|"]
    def row(label: str, a, b) -> str:
        return f"| {label} | {a} | {b} |"
    lines.append(row("version", cp.version if cp else "—", ch.version))
    lines.append(row("algorithm", cp.algorithm if cp else "—", ch.algorithm))
    keys = sorted(set(ch.params) | set(cp.params if cp else {}))
    for k in keys:
        a = cp.params.get(k, "—") if cp else "—"
        b = ch.params.get(k, "—")
        lines.append(row(f"param `{k}`" + (" ✱" if cp and a != b else ""), a, b))
    lines.append(row("features", f"{len(cp.features)}" if cp else "—", f"{len(ch.features)}"))
    lines.append(row("training extracts", ", ".join(e for e, _ in cp.input_extracts) if cp else "—",
                     ", ".join(e for e, _ in ch.input_extracts)))
    lines.append(row("training rows", cp.train_rows if cp else "—", ch.train_rows))
    lines.append(row("operating threshold", format_number(cp.operating_threshold, 4) if cp else "—",
                     format_number(ch.operating_threshold, 4)))
    lines.append(row("cohort spec sha256", f"`{cp.cohort_spec_sha256[:12]}`" if cp else "—", f"`{ch.cohort_spec_sha256[:12]}`"))
    lines.append(row("git commit", f"`{cp.git_commit[:12]}`" if cp else "—", f"`{ch.git_commit[:12]}`"))
    lines.append(row("lock sha256", f"`{cp.lock_sha256[:12]}`" if cp else "—", f"`{ch.lock_sha256[:12]}`"))
    lines.append(row("MLflow run", f"`{cp.run_id}`" if cp else "—", f"`{ch.run_id}`"))
    lines += ["", "Scores: " + "; ".join(f"{k}: {v}" for k, v in report.score_sources.items()) + "."]
    if report.caveats:
        lines += ["", "## Caveats", "", *(f"- {c}" for c in report.caveats)]
    return "\n".join(lines) + "\n"

"""The change-control report for people, as Markdown."""

from __future__ import annotations

import math

from clinical_mlops.core.reporting import format_number
from clinical_mlops.core.evidence import FAIL
from clinical_mlops.registry.change_control._decision import (
    BLOCKED,
    PENDING_APPROVAL,
    PROMOTED,
    Criterion,
    Decision,
)
from clinical_mlops.registry.change_control._mitigated import MitigatedTradeoff
from clinical_mlops.registry.change_control._report import ChangeControlReport

__all__ = ["render_markdown"]


def _ci(lo: float, hi: float, sign: bool = False) -> str:
    """``lo to hi``, or ``—`` when there is no interval."""
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return "—"
    return f"{format_number(lo, sign=sign)} to {format_number(hi, sign=sign)}"


_VERDICTS = {PROMOTED: "PROMOTION ALLOWED", BLOCKED: "PROMOTION BLOCKED", PENDING_APPROVAL: "PENDING APPROVAL"}


def _result(c: Criterion) -> str:
    if c.passed:
        return "pass"
    if c.waived:
        return f"insufficient evidence, waived ({c.waiver_id})"
    return "**FAIL**" if c.status == FAIL else "**insufficient evidence**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _mitigated_section(mitigated: MitigatedTradeoff) -> list[str]:
    m = mitigated
    lines = ["", "## Mitigated challenger", "",
             f"{m.label} ({m.method}), derived from {m.base_label}, assessed on the same held-out rows. "
             f"Decision: **{m.status.replace('_', ' ')}** — a mitigation is a modification that needs a named "
             "approver's review; it is never promoted automatically.", "",
             "| | candidate | mitigated |", "|---|---|---|",
             f"| AUROC (CI) | {format_number(m.candidate_auroc[0])} ({_ci(*m.candidate_auroc[1:])}) "
             f"| {format_number(m.mitigated_auroc[0])} ({_ci(*m.mitigated_auroc[1:])}) |"]
    for gap in m.recall_gaps:
        before, after = gap.get("before") or {}, gap.get("after") or {}
        lines.append(f"| {gap['rule'].replace('_', ' ')} {gap['group']} (CI) | {_gap(before)} | {_gap(after)} |")
    if m.next_command:
        lines += ["", f"To approve: `{m.next_command}`"]
    return lines


def _gap(found: dict) -> str:
    if not found or found.get("estimate") is None:
        return "—"
    return (f"{format_number(found['estimate'], sign=True)} ({_ci(found.get('lower'), found.get('upper'), sign=True)}) "
            f"{found.get('verdict', '')}")


def render_markdown(report: ChangeControlReport, decision: Decision,
                    mitigated: MitigatedTradeoff | None = None) -> str:
    """The report for people: decision, criteria, change, impact, fairness, drift, diff (and the
    mitigated challenger's trade-off, when there is one)."""
    ch, cp = report.challenger, report.champion
    title = f"{ch.label} (challenger) vs {cp.label} (champion)" if cp else f"{ch.label} (no champion yet)"
    verdict = _VERDICTS.get(decision.status, decision.status)
    lines = [
        f"# Change control — {report.cohort}: {title}",
        "",
        f"**{verdict}** — {_cell(decision.summary)}",
        "",
        f"Policy {report.policy_version} (sha256 `{report.policy_sha256[:12]}`), generated {report.created_at}. "
        f"Mode: {decision.mode.replace('_', ' ')}.",
    ]
    if decision.next_command:
        lines += ["", f"Next: `{decision.next_command}`"]
    if decision.incidents:
        lines += ["", f"Open incidents: {', '.join(decision.incidents)}."]
    lines += [
        "",
        "## Acceptance criteria",
        "",
        "| criterion | result | reason |",
        "|---|---|---|",
        *(f"| {c.name} | {_result(c)} | {_cell(c.reason)} |" for c in decision.criteria),
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
    lines += ["", "## Fairness verdicts", "", f"Source: {fair.source} — {fair.reason}.",
              f"- champion blocking failures: {', '.join(fair.champion_failures) or 'none'}",
              f"- challenger blocking failures: {', '.join(fair.challenger_failures) or 'none'}",
              f"- new: {', '.join(fair.new_failures) or 'none'}; resolved: {', '.join(fair.resolved) or 'none'}",
              f"- not assessable: {', '.join(fair.not_assessable) or 'none'}",
              *(f"- {a.rule}: {a.status} — {_cell(a.reason)}" for a in fair.rules),
              *(f"- note: {n}" for n in fair.notes)]
    shared = [s for a in fair.rules for s in a.shared]
    if shared:
        lines += ["", f"Failures shared with the champion (challenger gap − champion gap, negative is worse; "
                      f"margin {fair.margin:g}):", "",
                  "| group | champion gap | challenger gap | difference (CI) | result |", "|---|---|---|---|---|"]
        for s in shared:
            lines.append(f"| {s['group']} | {format_number(s.get('champion_gap'), sign=True)} | "
                         f"{format_number(s.get('challenger_gap'), sign=True)} | "
                         f"{format_number(s.get('delta'), sign=True)} ({_ci(s.get('lower'), s.get('upper'), sign=True)}) "
                         f"| {s['status']} |")
    if mitigated is not None:
        lines += _mitigated_section(mitigated)
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

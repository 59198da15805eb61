"""Readable pages: the fairness report, the root-cause and mitigation pages, and the governance document.

Reports are self-contained HTML (plots are matplotlib PNGs embedded as base64) so they can be
attached to a Dagster materialization, archived or mailed. Groups smaller than
:data:`SMALL_CELL` are shown with their count only (small-cell suppression). The governance
document is generated from the policy file itself, so what it says and what the gates enforce
cannot disagree.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clinical_mlops.core import reporting
from clinical_mlops.core.reporting import format_number
from clinical_mlops.fairness.audit import SMALL_CELL, FairnessAudit
from clinical_mlops.governance.policy import SEVERITIES, Policy

__all__ = [
    "SMALL_CELL",
    "governance_html",
    "governance_markdown",
    "img_tag",
    "plot_disparity",
    "plot_group_metric",
    "recall_gap_markdown",
    "render_audit_html",
    "required_groups_markdown",
    "root_cause_html",
    "shown_count",
    "summary_markdown",
    "tradeoff_html",
    "tradeoff_markdown",
    "verdict_summary",
]

_STATUS_WORDS = {"pass": "PASS", "fail": "FAIL", "insufficient_evidence": "INSUFFICIENT EVIDENCE (not a pass)"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:1100px;color:#1d2733}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem} td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f3f5f7} td.l,th.l{text-align:left}
.pass{background:#e3f4e1}.fail{background:#fbe0dd}.insufficient_evidence{background:#fff4d6}
.box{border:1px solid #ccc;border-radius:6px;padding:.75rem 1rem;background:#fafbfc} .muted{color:#667}
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _fmt(value: object, digits: int = 3) -> str:
    """Anything float-like through :func:`format_number` (NaN as —); anything else as escaped text."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _esc(value)
    return format_number(v, digits)


def shown_count(value: object) -> int | str:
    """A group count as a report shows it: below :data:`SMALL_CELL` (and above 0) only as ``<11``."""
    n = int(value)  # type: ignore[call-overload]
    return n if n >= SMALL_CELL or n == 0 else f"<{SMALL_CELL}"


def _gap(value: object) -> str:
    """A minimum detectable gap; — when none was computed or no drop is detectable at this size."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v:.3f}"


def _ci(lo: object, hi: object) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return "—"
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def _table(frame: pd.DataFrame, columns: Iterable[tuple[str, str]], row_class: str | None = None,
           left: Iterable[str] = ()) -> str:
    cols = list(columns)
    left = set(left)
    head = "".join(f'<th class="{"l" if k in left else ""}">{_esc(t)}</th>' for k, t in cols)
    rows = []
    for _, r in frame.iterrows():
        cls = f' class="{_esc(r[row_class])}"' if row_class else ""
        cells = "".join(
            f'<td class="{"l" if k in left else ""}">{_esc(r[k]) if k in left else _fmt(r[k]) if isinstance(r[k], float) else _esc(r[k])}</td>'
            for k, _ in cols
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def plot_disparity(result: FairnessAudit, metric: str, bound: float | None, kind: str = "difference") -> bytes:
    """Forest plot: each group's disparity against its reference with its interval and the policy bound."""
    d = result.disparities[(result.disparities["metric"] == metric) & (result.disparities["n"] >= SMALL_CELL)]
    d = d.iloc[::-1]
    fig = Figure(figsize=(7, 0.35 * max(len(d), 4) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ypos = np.arange(len(d))
    est, lo, hi = d["estimate"].to_numpy(), d["lower"].to_numpy(), d["upper"].to_numpy()
    err = np.clip(np.vstack([np.nan_to_num(est - lo), np.nan_to_num(hi - est)]), 0, None)
    ax.errorbar(est, ypos, xerr=err, fmt="o", color="#1f4e79", ecolor="#7a9cc6", capsize=3)
    ax.set_yticks(ypos, [f"{s}: {g} (n={n})" for s, g, n in zip(d["slice"], d["group"], d["n"])], fontsize=8)
    centre = 1.0 if kind == "ratio" else 0.0
    ax.axvline(centre, color="grey", linewidth=1)
    if bound is not None:
        lines = (bound, 1 / bound) if kind == "ratio" else (-bound, bound)
        for x in lines:
            ax.axvline(x, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlabel(f"{metric} vs reference ({'ratio' if kind == 'ratio' else 'difference'}), {result.confidence:.0%} CI")
    ax.set_title(f"{metric}: policy bound in red")
    return _png(fig)


def plot_group_metric(result: FairnessAudit, slice_name: str, metric: str) -> bytes:
    g = result.groups[(result.groups["slice"] == slice_name) & (result.groups["metric"] == metric)
                      & (result.groups["n"] >= SMALL_CELL)]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(g))
    est = np.nan_to_num(g["estimate"].to_numpy())
    err = np.clip(np.vstack([np.nan_to_num(est - g["lower"].to_numpy()), np.nan_to_num(g["upper"].to_numpy() - est)]), 0, None)
    colors = ["#2e7d32" if ref else "#1f4e79" for ref in g["is_reference"]]
    ax.bar(x, np.nan_to_num(est), color=colors, alpha=0.8)
    ax.errorbar(x, np.nan_to_num(est), yerr=err, fmt="none", ecolor="black", capsize=3)
    ax.set_xticks(x, [f"{v}\n(n={n})" for v, n in zip(g["group"], g["n"])], fontsize=7, rotation=30)
    ax.set_title(f"{metric} by {slice_name} (reference in green)")
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Fairness report
# --------------------------------------------------------------------------------------------


def _labels(rows: pd.DataFrame) -> str:
    return ", ".join(f"{r.slice}={r.group}" for r in rows.itertuples(index=False)) or "—"


def verdict_summary(result: FairnessAudit) -> pd.DataFrame:
    """One row per policy rule: its status under the evidence rule, why, counts of each verdict, the
    failing groups, the required groups without evidence and the groups not assessable."""
    rows = []
    for outcome in result.outcomes():
        rule = outcome.rule
        rows.append({
            "rule": rule.name, "severity": rule.severity, "bound": rule.describe(),
            "status": outcome.status, "status_text": _STATUS_WORDS[outcome.status], "reason": outcome.reason,
            "pass": outcome.counts["pass"], "fail": outcome.counts["fail"],
            "insufficient_evidence": outcome.counts["insufficient_evidence"],
            "failing_groups": ", ".join(f"{r['slice']}={r['group']}" for r in outcome.evidence()) or "—",
            "insufficient_required": _labels(outcome.insufficient_required),
            "not_assessable": _labels(outcome.not_assessable),
            "check": rule.check_name, "blocking": rule.blocking,
        })
    return pd.DataFrame(rows)


def summary_markdown(result: FairnessAudit) -> str:
    table = verdict_summary(result)
    lines = ["| rule | severity | bound | status | pass | fail | insufficient | failing groups | "
             "required, no evidence | not assessable |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['rule']} | {r['severity']} | {r['bound']} | **{r['status_text']}** | {r['pass']} | "
                     f"{r['fail']} | {r['insufficient_evidence']} | {r['failing_groups']} | "
                     f"{r['insufficient_required']} | {r['not_assessable']} |")
    return "\n".join(lines)


def _required_table(result: FairnessAudit) -> pd.DataFrame:
    """Required groups with their counts, minimum detectable recall gap and recall-gap verdict."""
    req = result.required_groups().copy()
    verdicts = result.verdicts[result.verdicts["rule"] == "recall_gap"].set_index(["slice", "group"])["verdict"]
    req["recall_gap_verdict"] = [verdicts.get((s, g), "—") for s, g in zip(req["slice"], req["group"])]
    for col in ("n", "n_positive", "reference_n_positive"):
        req[col] = [str(shown_count(v)) for v in req[col]]
    req["min_detectable_gap"] = [_gap(v) for v in req["min_detectable_gap"]]
    return req


def required_groups_markdown(result: FairnessAudit) -> str:
    """The required groups and the smallest recall gap each could show (80 % power)."""
    req = _required_table(result)
    if req.empty:
        return "No group is required by the policy."
    lines = ["| slice | group | n | positives | reference positives | min detectable recall gap | recall-gap verdict |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.slice} | {r.group} | {r.n} | {r.n_positive} | {r.reference_n_positive} | "
              f"{r.min_detectable_gap} | {r.recall_gap_verdict} |" for r in req.itertuples(index=False)]
    return "\n".join(lines)


def recall_gap_markdown(result: FairnessAudit) -> str:
    v = result.verdicts[result.verdicts["rule"] == "recall_gap"]
    lines = ["| slice | group | required | n | recall gap | CI | p (adj.) | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in v.itertuples(index=False):
        req = "yes" if r.required else "no"
        if r.n < SMALL_CELL:
            lines.append(f"| {r.slice} | {r.group} | {req} | {shown_count(r.n)} | — | — | — | {r.verdict} |")
            continue
        lines.append(f"| {r.slice} | {r.group} | {req} | {r.n} | {_fmt(r.estimate)} | {_ci(r.lower, r.upper)} | "
                     f"{_fmt(r.p_adjusted, 3)} | {r.verdict} |")
    return "\n".join(lines)


def _power_note(policy: Policy) -> str:
    return (f"<p class=muted>Minimum detectable gap: the smallest drop in recall against the reference that a two-sided "
            f"test at alpha {policy.fairness.significance.alpha:g} detects with 80 % power at the group's and the "
            "reference's numbers of positives (normal approximation on the arcsine scale, Cohen's h). A bound tighter "
            "than this cannot be shown to hold at this sample size; — means no drop is detectable.</p>")


def render_audit_html(result: FairnessAudit, *, title: str, model: str, policy: Policy,
                      extra_sections: Iterable[str] = ()) -> str:
    """The fairness report page for one audited model."""
    summary = verdict_summary(result)
    parts = [
        f"<h1>{_esc(title)}</h1>",
        f'<div class="box"><b>Model</b> {_esc(model)} · <b>operating threshold</b> {_fmt(result.threshold, 4)} · '
        f"<b>held-out encounters</b> {result.n} ({result.n_positive} positive) · <b>policy</b> {_esc(policy.version)} "
        f'(sha256 <code>{_esc(result.policy_sha256[:16])}…</code>) · {result.n_bootstrap} bootstrap replicates, '
        f"{result.confidence:.0%} intervals · recall-gap p-values corrected with {_esc(result.correction)}</div>",
        "<p class=muted>A gap <b>fails</b> only when its whole interval lies outside the policy bound, "
        "<b>passes</b> only when its whole interval lies inside it, and is otherwise "
        "<b>insufficient evidence</b> — as is every group below the minimum group size "
        f"({policy.fairness.min_group_size}). A rule <b>fails</b> if any group fails; it is <b>insufficient "
        "evidence</b> — which is not a pass and blocks a blocking rule — if a required group lacks evidence or no "
        "group could be assessed; it <b>passes</b> otherwise. Groups that are not required and lack evidence are "
        "<b>not assessable</b>: listed here and acknowledged at promotion.</p>",
        "<h2>Status by policy rule</h2>",
        _table(summary, [("rule", "rule"), ("severity", "severity"), ("bound", "bound"), ("status_text", "status"),
                         ("reason", "why"), ("pass", "pass"), ("fail", "fail"),
                         ("insufficient_evidence", "insufficient"), ("failing_groups", "failing groups"),
                         ("insufficient_required", "required, without evidence"),
                         ("not_assessable", "not assessable"), ("check", "asset check")],
               row_class="status", left=("rule", "severity", "bound", "status_text", "reason", "failing_groups",
                                         "insufficient_required", "not_assessable", "check")),
        "<h2>Required groups and minimum detectable gaps</h2>",
        _required_html(result, policy),
    ]
    for rule in result.rules:
        parts.append(f"<h2>{_esc(rule.name)} ({_esc(rule.severity)}, {_esc(rule.describe())})</h2>")
        parts.append(img_tag(plot_disparity(result, rule.name, rule.bound, rule.kind), rule.name))
        v = result.verdicts[result.verdicts["rule"] == rule.name].copy()
        v["ci"] = [_ci(lo, hi) if n >= SMALL_CELL else "—" for lo, hi, n in zip(v["lower"], v["upper"], v["n"])]
        v["estimate"] = [e if n >= SMALL_CELL else float("nan") for e, n in zip(v["estimate"], v["n"])]
        v["n"] = [str(n) if n >= SMALL_CELL else f"<{SMALL_CELL}" for n in v["n"]]
        cols = [("slice", "slice"), ("group", "group"), ("reference", "reference"), ("n", "n"), ("estimate", "estimate"),
                ("ci", "CI")]
        if rule.name == "recall_gap":
            cols.append(("p_adjusted", "p (adjusted)"))
        v["required"] = v["required"].map({True: "yes", False: "no"})
        cols += [("required", "required"), ("verdict", "verdict"), ("reason", "reason")]
        parts.append(_table(v, cols, row_class="verdict",
                            left=("slice", "group", "reference", "n", "ci", "required", "verdict", "reason")))
    parts.append("<h2>Per-group metrics</h2>")
    slices = list(dict.fromkeys(result.groups["slice"]))
    for slice_name in slices:
        parts.append(img_tag(plot_group_metric(result, slice_name, "tpr"), f"recall by {slice_name}"))
    wide = result.groups.pivot_table(index=["slice", "group", "n", "n_positive"], columns="metric", values="estimate",
                                     sort=False).reset_index()
    for metric in ("prevalence", "selection_rate", "tpr", "fpr", "precision", "auroc", "calibration"):
        if metric in wide:
            wide[metric] = [v if n >= SMALL_CELL else float("nan") for v, n in zip(wide[metric], wide["n"])]
    wide["n_positive"] = [str(p) if n >= SMALL_CELL else "—" for p, n in zip(wide["n_positive"], wide["n"])]
    wide["n"] = [str(n) if n >= SMALL_CELL else f"<{SMALL_CELL}" for n in wide["n"]]
    parts.append(_table(wide, [("slice", "slice"), ("group", "group"), ("n", "n"), ("n_positive", "positives"),
                               ("prevalence", "prevalence"), ("selection_rate", "selection rate"), ("tpr", "TPR (recall)"),
                               ("fpr", "FPR"), ("precision", "precision"), ("auroc", "AUROC"),
                               ("calibration", "calibration (mean risk − rate)")],
                        left=("slice", "group", "n", "n_positive")))
    parts.extend(extra_sections)
    return _page(title, parts)


def _required_html(result: FairnessAudit, policy: Policy) -> str:
    fp = policy.fairness
    listed = "; ".join(f"{a.name}: {', '.join(a.required_groups)}" for a in fp.sensitive_attributes if a.required_groups)
    share = ("" if fp.required_population_share is None else
             f" and every group of an attribute with at least {fp.required_population_share:.0%} of the audited rows")
    intro = f"<p>Required by the policy: {_esc(listed or 'no listed group')}{_esc(share)} (never the reference).</p>"
    req = _required_table(result)
    if req.empty:
        return intro + "<p>No group is required.</p>"
    table = _table(req, [("slice", "slice"), ("group", "group"), ("reference", "reference"), ("n", "n"),
                         ("n_positive", "positives"), ("reference_n_positive", "reference positives"),
                         ("min_detectable_gap", "min detectable recall gap"),
                         ("recall_gap_verdict", "recall-gap verdict")],
                   left=("slice", "group", "reference", "n", "n_positive", "reference_n_positive",
                         "min_detectable_gap", "recall_gap_verdict"))
    return intro + table + _power_note(policy)


def _page(title: str, parts: Iterable[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")


def tradeoff_html(table: pd.DataFrame, reason: str) -> str:
    t = table.copy()
    t["recall_gap_ci"] = [_ci(lo, hi) for lo, hi in zip(t["recall_gap_lower"], t["recall_gap_upper"])]
    t["needs_sensitive_attribute"] = t["needs_sensitive_attribute"].map({True: "yes", False: "no"})
    t["chosen"] = t["chosen"].map({True: "✔", False: ""})
    return "<h2>Mitigation trade-off</h2>" + _table(
        t, [("method", "method"), ("kind", "kind"), ("needs_sensitive_attribute", "needs sensitive attribute at prediction"),
            ("auroc", "AUROC"), ("auroc_change", "ΔAUROC"), ("recall", "recall"), ("alerts_per_100", "alerts/100"),
            ("recall_gap", "recall gap"), ("recall_gap_ci", "gap CI"), ("max_abs_recall_gap", "max |gap| (judged)"),
            ("blocking_fails", "blocking fails"), ("chosen", "registered")],
        left=("method", "kind", "needs_sensitive_attribute", "recall_gap_ci", "chosen"),
    ) + f"<p>{_esc(reason)}</p>"


def tradeoff_markdown(table: pd.DataFrame) -> str:
    lines = ["| method | sensitive attr. at prediction | AUROC | recall | alerts/100 | recall gap [CI] | blocking fails |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.method}{' ✔' if r.chosen else ''} | {'yes' if r.needs_sensitive_attribute else 'no'} | "
                     f"{_fmt(r.auroc)} | {_fmt(r.recall)} | {_fmt(r.alerts_per_100, 1)} | {_fmt(r.recall_gap)} "
                     f"{_ci(r.recall_gap_lower, r.recall_gap_upper)} | {r.blocking_fails} |")
    return "\n".join(lines)


def root_cause_html(causes: Iterable, *, title: str, model: str, policy: Policy) -> str:
    parts = [f"<h1>{_esc(title)}</h1>", f'<div class="box"><b>Model</b> {_esc(model)} · <b>policy</b> '
             f"{_esc(policy.version)} (sha256 <code>{_esc(policy.sha256[:16])}…</code>)</div>"]
    for cause in causes:
        parts.append(f"<h2>{_esc(cause.slice)} = {_esc(cause.group)} (reference {_esc(cause.reference)})</h2>")
        parts.append(f'<p class="box"><b>Conclusion.</b> {_esc(cause.conclusion)}</p><ul>')
        for f in cause.findings:
            parts.append(f"<li>{'⚠️ ' if f.concern else ''}<b>{_esc(f.title)}</b> ({_esc(f.category)}): {_esc(f.detail)}</li>")
        parts.append("</ul>")
        for name, table in cause.tables.items():
            head = table.head(10)
            parts.append(f"<h3>{_esc(name.replace('_', ' '))}</h3>")
            parts.append(_table(head, [(c, c) for c in head.columns], left=("feature",)))
    return _page(title, parts)


# --------------------------------------------------------------------------------------------
# Governance document, generated from the policy
# --------------------------------------------------------------------------------------------


def _attributes_text(fp) -> str:
    return (", ".join(f"**{a.name}** (reference {a.reference})" for a in fp.sensitive_attributes)
            + (f" and the intersections {', '.join(' × '.join(c) for c in fp.intersections)}" if fp.intersections
               else ""))


def _reference_population_lines(fp) -> list[str]:
    return [line for a in fp.sensitive_attributes if a.reference_population
            for line in (f"Declared reference population for **{a.name}**: "
                         + ", ".join(f"{g} {s:.1%}" for g, s in a.reference_population.items()) + ".", "")]


def _per_source_lines(policy: Policy) -> list[str]:
    """Each source contract's sensitive attributes and required groups, as the policy applies them."""
    from types import SimpleNamespace

    from clinical_mlops.governance.policy import for_cohort
    from clinical_mlops.sources.contract import load_all_sources

    lines: list[str] = []
    for name, source in load_all_sources().items():
        fp = for_cohort(policy, SimpleNamespace(source=name)).fairness
        required = "; ".join(f"{a.name}: {', '.join(a.required_groups)}" for a in fp.sensitive_attributes
                             if a.required_groups) or "none listed"
        lines += [f"**Source `{name}`** (contract sha256 {source.sha256[:12]}): {_attributes_text(fp) or 'none'}. "
                  f"Required groups: {required}.", "", *_reference_population_lines(fp)]
    return lines


def governance_markdown(policy: Policy) -> str:
    """The governance document: thresholds, who intervenes, how clinicians are told, timelines."""
    fp, cc, dr = policy.fairness, policy.change_control, policy.drift
    lines = [
        "# Clinical model governance",
        "",
        f"Generated from `{policy.source}` — version **{policy.version}**, sha256 `{policy.sha256}`. "
        "The gates that enforce these rules read the same file; every decision they record carries this hash.",
        "",
        "## Owners",
        "",
        "| role | who |", "|---|---|",
        *[f"| {role} | {contact} |" for role, contact in policy.owners.as_dict().items()],
        "",
        "## Fairness",
        "",
        "Audited on the held-out split at the model's operating threshold, for the sensitive attributes "
        + (_attributes_text(fp) if fp.sensitive_attributes else
           "its source contract declares (`sources/<source>.yaml`: `sensitive_attributes`, `intersections`; "
           "listed per source below)")
        + f". Intervals: {fp.n_bootstrap} bootstrap replicates at {fp.confidence:.0%}; recall gaps are also tested "
        f"(two-proportion z-test, {fp.significance.correction} correction, alpha {fp.significance.alpha:g}).",
        "",
        f"A group with fewer than **{fp.min_group_size}** held-out encounters is *insufficient evidence*, never a pass. "
        "A gap *fails* only when its whole interval lies outside the bound and *passes* only when its whole interval "
        "lies inside it.",
        "",
        "A rule *fails* if any group fails. It is *insufficient evidence* — not a pass: a blocking rule then stops "
        "promotion until a named approver records a waiver — if a required group lacks evidence or no group could be "
        "assessed at all. Required groups: "
        + ("; ".join(f"{a.name}: {', '.join(a.required_groups)}" for a in fp.sensitive_attributes if a.required_groups)
           or "none listed")
        + ("" if fp.required_population_share is None else
           f"; and every group of an attribute with at least {fp.required_population_share:.0%} of the audited rows")
        + " (never the reference; intersections have none). Other groups without evidence are listed as *not "
        "assessable* and acknowledged at promotion. For each required group the report states the smallest recall gap "
        f"detectable with 80 % power at alpha {fp.significance.alpha:g}.",
        "",
        "| metric | bound | severity | enforced by asset check | blocks promotion |", "|---|---|---|---|---|",
        *[f"| {m.name} | {m.describe()} | {m.severity} | `{m.check_name}` | {'yes' if m.blocking else 'no'} |"
          for m in fp.metrics],
        "",
    ]
    lines += _reference_population_lines(fp)
    if not fp.sensitive_attributes:
        lines += _per_source_lines(policy)
    lines += [
        f"When a fairness check fails, root-cause analysis and the mitigation options "
        f"({', '.join(fp.mitigation.methods)}; constraint {fp.mitigation.constraint}) run automatically and a "
        "trade-off table is produced for the reviewer. A mitigated model is a challenger: it goes through change control "
        "like any other.",
        "",
        "## Drift",
        "",
        f"Per-feature tests at alpha {dr.alpha:g} with {dr.correction} correction; the dataset drifts when "
        f"{dr.dataset_drift_share:.0%} of features drift; PSI threshold {dr.psi_threshold:g}. Severity: {dr.severity}.",
        "",
        "## Change control",
        "",
        f"Allowed without new review: {', '.join(cc.allowed_modifications)}. Requires a new review: "
        f"{', '.join(cc.requires_new_review)}.",
        "",
        f"A challenger is accepted when the lower bound of its AUROC difference to the champion (paired bootstrap) is "
        f"above −{cc.acceptance.max_auroc_drop:g}"
        + (" and it introduces no new fairness failure" if cc.acceptance.no_new_fairness_failures else "")
        + f". With no champion: AUROC ≥ {cc.absolute_acceptance.min_auroc:g} and Brier ≤ {cc.absolute_acceptance.max_brier:g}.",
        "",
        "## Escalation",
        "",
        "| severity | who is told | within | channel | what they do |", "|---|---|---|---|---|",
    ]
    for severity in SEVERITIES:
        rule = policy.escalation.for_severity(severity)
        who = ", ".join(f"{r} ({policy.owners.contact(r)})" for r in rule.notify)
        lines.append(f"| {severity} | {who} | {rule.within_hours:g} h | {rule.channel or '—'} | {rule.action} |")
    lines += [
        "",
        "A failing blocking check (severity block_promotion or open_incident) opens an incident record in "
        "`monitoring.incidents` with the owner, the deadline (opened + the hours above), the evidence and the policy hash.",
        "",
    ]
    return "\n".join(lines)


def governance_html(policy: Policy) -> str:
    """The governance document as a standalone HTML page (its Markdown rendered by :func:`reporting.page`)."""
    return reporting.page(governance_markdown(policy), "Clinical model governance")

"""Readable pages: the fairness report, the root-cause and mitigation pages (and, re-exported from
:mod:`.governance_document`, the governance document).

Each is written as Markdown and rendered to one self-contained HTML page by
:func:`clinical_mlops.core.reporting.page` (plots are matplotlib PNGs from :mod:`.plots`, embedded as
data URIs) so it can be attached to a Dagster materialization, archived or mailed. Table rows are
coloured by their status or verdict. Groups smaller than :data:`SMALL_CELL` are shown with their
count only (small-cell suppression).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from clinical_mlops.core import reporting
from clinical_mlops.core.reporting import escape_markdown as _text, format_number, png_markdown
from clinical_mlops.fairness.audit import SMALL_CELL, FairnessAudit
from clinical_mlops.fairness.governance_document import governance_html, governance_markdown
from clinical_mlops.fairness.plots import plot_disparity, plot_group_metric
from clinical_mlops.governance.policy import Policy

if TYPE_CHECKING:
    from clinical_mlops.fairness.mitigation import MitigationResult

__all__ = [
    "SMALL_CELL",
    "audit_markdown",
    "governance_html",
    "governance_markdown",
    "recall_gap_markdown",
    "render_audit_html",
    "required_groups_markdown",
    "root_cause_html",
    "root_cause_markdown",
    "shown_count",
    "summary_markdown",
    "tradeoff_markdown",
    "tradeoff_section",
    "verdict_summary",
]

_STATUS_WORDS = {"pass": "PASS", "fail": "FAIL", "insufficient_evidence": "INSUFFICIENT EVIDENCE (not a pass)"}
_ROW_CLASSES = {"status": {word: status for status, word in _STATUS_WORDS.items()},
                "verdict": {status: status for status in _STATUS_WORDS}}
"""An audit page's rows coloured by the rule status (summary) or the group's verdict (one table per rule)."""


def _fmt(value: object, digits: int = 3) -> str:
    """Anything float-like through :func:`format_number` (NaN as —); anything else as its text."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return format_number(v, digits)


def shown_count(value: object) -> int | str:
    """A group count as a report shows it: below :data:`SMALL_CELL` (and above 0) only as ``<11``."""
    n = int(value)  # type: ignore[call-overload]
    return n if n >= SMALL_CELL or n == 0 else f"<{SMALL_CELL}"


def _ci(lo: object, hi: object) -> str:
    """An interval as ``[lo, hi]``, each end through :func:`_fmt`. Kept beside :func:`format_number`, whose
    format it uses, because an interval is not one number: undefined at either end it is one —, not ``[—, —]``."""
    if any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return "—"
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _md_table(frame: pd.DataFrame, columns: Iterable[tuple[str, str]], left: Iterable[str] = ()) -> str:
    """``columns`` (key, header) of ``frame`` as a Markdown table: floats through :func:`_fmt` and right-aligned
    unless ``left``; every other cell as its text."""
    cols, left = list(columns), set(left)
    lines = ["| " + " | ".join(_text(t) for _, t in cols) + " |",
             "|" + "|".join("---" if k in left else "--:" for k, _ in cols) + "|"]
    for _, r in frame.iterrows():
        cells = (_fmt(r[k]) if k not in left and isinstance(r[k], float) else r[k] for k, _ in cols)
        lines.append("| " + " | ".join(_text(c) for c in cells) + " |")
    return "\n".join(lines)


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
    # a float or NaN (— when none was computed or no drop is detectable at this size)
    req["min_detectable_gap"] = [format_number(v) for v in req["min_detectable_gap"]]
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


def _required_section(result: FairnessAudit, policy: Policy) -> list[str]:
    fp = policy.fairness
    listed = "; ".join(f"{a.name}: {', '.join(a.required_groups)}" for a in fp.sensitive_attributes if a.required_groups)
    share = ("" if fp.required_population_share is None else
             f" and every group of an attribute with at least {fp.required_population_share:.0%} of the audited rows")
    intro = _text(f"Required by the policy: {listed or 'no listed group'}{share} (never the reference).")
    req = _required_table(result)
    if req.empty:
        return [intro, "No group is required."]
    table = _md_table(req, [("slice", "slice"), ("group", "group"), ("reference", "reference"), ("n", "n"),
                            ("n_positive", "positives"), ("reference_n_positive", "reference positives"),
                            ("min_detectable_gap", "min detectable recall gap"),
                            ("recall_gap_verdict", "recall-gap verdict")], left=req.columns)
    return [intro, table, (
        "Minimum detectable gap: the smallest drop in recall against the reference that a two-sided test at alpha "
        f"{fp.significance.alpha:g} detects with 80 % power at the group's and the reference's numbers of positives "
        "(normal approximation on the arcsine scale, Cohen's h). A bound tighter than this cannot be shown to hold at "
        "this sample size; — means no drop is detectable.")]


def _rule_section(result: FairnessAudit, rule) -> list[str]:
    """One policy rule: its forest plot and every group's verdict."""
    v = result.verdicts[result.verdicts["rule"] == rule.name].copy()
    v["ci"] = [_ci(lo, hi) if n >= SMALL_CELL else "—" for lo, hi, n in zip(v["lower"], v["upper"], v["n"])]
    v["estimate"] = [e if n >= SMALL_CELL else float("nan") for e, n in zip(v["estimate"], v["n"])]
    v["n"] = [str(n) if n >= SMALL_CELL else f"<{SMALL_CELL}" for n in v["n"]]
    v["required"] = v["required"].map({True: "yes", False: "no"})
    cols = [("slice", "slice"), ("group", "group"), ("reference", "reference"), ("n", "n"), ("estimate", "estimate"),
            ("ci", "CI"), *([("p_adjusted", "p (adjusted)")] if rule.name == "recall_gap" else []),
            ("required", "required"), ("verdict", "verdict"), ("reason", "reason")]
    return [f"## {_text(rule.name)} ({_text(rule.severity)}, {_text(rule.describe())})",
            png_markdown(plot_disparity(result, rule.name, rule.bound, rule.kind), rule.name),
            _md_table(v, cols, left=("slice", "group", "reference", "n", "ci", "required", "verdict", "reason"))]


def _group_metrics_section(result: FairnessAudit) -> list[str]:
    """Recall by group for each slice, and every group's metrics (small cells suppressed)."""
    plots = [png_markdown(plot_group_metric(result, s, "tpr"), f"recall by {s}")
             for s in dict.fromkeys(result.groups["slice"])]
    wide = result.groups.pivot_table(index=["slice", "group", "n", "n_positive"], columns="metric", values="estimate",
                                     sort=False).reset_index()
    for metric in ("prevalence", "selection_rate", "tpr", "fpr", "precision", "auroc", "calibration"):
        if metric in wide:
            wide[metric] = [v if n >= SMALL_CELL else float("nan") for v, n in zip(wide[metric], wide["n"])]
    wide["n_positive"] = [str(p) if n >= SMALL_CELL else "—" for p, n in zip(wide["n_positive"], wide["n"])]
    wide["n"] = [str(n) if n >= SMALL_CELL else f"<{SMALL_CELL}" for n in wide["n"]]
    return ["## Per-group metrics", *plots, _md_table(
        wide, [("slice", "slice"), ("group", "group"), ("n", "n"), ("n_positive", "positives"),
               ("prevalence", "prevalence"), ("selection_rate", "selection rate"), ("tpr", "TPR (recall)"),
               ("fpr", "FPR"), ("precision", "precision"), ("auroc", "AUROC"),
               ("calibration", "calibration (mean risk − rate)")], left=("slice", "group", "n", "n_positive"))]


def audit_markdown(result: FairnessAudit, *, title: str, model: str, policy: Policy,
                   extra_sections: Iterable[str] = ()) -> str:
    """The fairness report for one audited model, in Markdown; ``extra_sections`` (Markdown) go last."""
    parts = [
        f"# {_text(title)}",
        f"> **Model** {_text(model)} · **operating threshold** {_fmt(result.threshold, 4)} · **held-out encounters** "
        f"{result.n} ({result.n_positive} positive) · **policy** {_text(policy.version)} "
        f"(sha256 `{result.policy_sha256[:16]}…`) · {result.n_bootstrap} bootstrap replicates, "
        f"{result.confidence:.0%} intervals · recall-gap p-values corrected with {_text(result.correction)}",
        "A gap **fails** only when its whole interval lies outside the policy bound, **passes** only when its whole "
        "interval lies inside it, and is otherwise **insufficient evidence** — as is every group below the minimum "
        f"group size ({policy.fairness.min_group_size}). A rule **fails** if any group fails; it is **insufficient "
        "evidence** — which is not a pass and blocks a blocking rule — if a required group lacks evidence or no group "
        "could be assessed; it **passes** otherwise. Groups that are not required and lack evidence are **not "
        "assessable**: listed here and acknowledged at promotion.",
        "## Status by policy rule",
        _md_table(verdict_summary(result),
                  [("rule", "rule"), ("severity", "severity"), ("bound", "bound"), ("status_text", "status"),
                   ("reason", "why"), ("pass", "pass"), ("fail", "fail"), ("insufficient_evidence", "insufficient"),
                   ("failing_groups", "failing groups"), ("insufficient_required", "required, without evidence"),
                   ("not_assessable", "not assessable"), ("check", "asset check")],
                  left=("rule", "severity", "bound", "status_text", "reason", "failing_groups",
                        "insufficient_required", "not_assessable", "check")),
        "## Required groups and minimum detectable gaps",
        *_required_section(result, policy),
    ]
    for rule in result.rules:
        parts += _rule_section(result, rule)
    parts += _group_metrics_section(result)
    parts += extra_sections
    return "\n\n".join(parts) + "\n"


def render_audit_html(result: FairnessAudit, *, title: str, model: str, policy: Policy,
                      extra_sections: Iterable[str] = ()) -> str:
    """The fairness report page for one audited model (:func:`audit_markdown`, rows coloured by status)."""
    return reporting.page(audit_markdown(result, title=title, model=model, policy=policy,
                                         extra_sections=extra_sections),
                          title, style=reporting.EVIDENCE_STYLE, row_classes=_ROW_CLASSES)


def tradeoff_section(table: pd.DataFrame, reason: str, chosen: MitigationResult) -> str:
    """The mitigated model's page section: the trade-off table, why the registered option was chosen, and
    whether it needs the sensitive attribute at prediction time (Markdown)."""
    t = table.copy()
    t["recall_gap_ci"] = [_ci(lo, hi) for lo, hi in zip(t["recall_gap_lower"], t["recall_gap_upper"])]
    t["needs_sensitive_attribute"] = t["needs_sensitive_attribute"].map({True: "yes", False: "no"})
    t["chosen"] = t["chosen"].map({True: "✔", False: ""})
    uses = (f"needs the sensitive attribute(s) {', '.join(chosen.attributes)} at prediction time."
            if chosen.needs_sensitive_attribute else "does not use the sensitive attribute at prediction time.")
    return "\n\n".join(["## Mitigation trade-off", _md_table(
        t, [("method", "method"), ("kind", "kind"), ("needs_sensitive_attribute", "needs sensitive attribute at prediction"),
            ("auroc", "AUROC"), ("auroc_change", "ΔAUROC"), ("recall", "recall"), ("alerts_per_100", "alerts/100"),
            ("recall_gap", "recall gap"), ("recall_gap_ci", "gap CI"), ("max_abs_recall_gap", "max |gap| (judged)"),
            ("blocking_fails", "blocking fails"), ("chosen", "registered")],
        left=("method", "kind", "needs_sensitive_attribute", "recall_gap_ci", "chosen"),
    ), _text(reason), f"**{_text(chosen.method)}** {_text(uses)}"])


def tradeoff_markdown(table: pd.DataFrame) -> str:
    lines = ["| method | sensitive attr. at prediction | AUROC | recall | alerts/100 | recall gap [CI] | blocking fails |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.method}{' ✔' if r.chosen else ''} | {'yes' if r.needs_sensitive_attribute else 'no'} | "
                     f"{_fmt(r.auroc)} | {_fmt(r.recall)} | {_fmt(r.alerts_per_100, 1)} | {_fmt(r.recall_gap)} "
                     f"{_ci(r.recall_gap_lower, r.recall_gap_upper)} | {r.blocking_fails} |")
    return "\n".join(lines)


def root_cause_markdown(causes: Iterable, *, title: str, model: str, policy: Policy) -> str:
    """The root-cause page in Markdown: per failing group, the conclusion, the findings and their tables."""
    parts = [f"# {_text(title)}",
             f"> **Model** {_text(model)} · **policy** {_text(policy.version)} (sha256 `{policy.sha256[:16]}…`)"]
    for cause in causes:
        parts.append(f"## {_text(cause.slice)} = {_text(cause.group)} (reference {_text(cause.reference)})")
        parts.append(f"> **Conclusion.** {_text(cause.conclusion)}")
        parts += ["\n".join(f"- {'⚠️ ' if f.concern else ''}**{_text(f.title)}** ({_text(f.category)}): {_text(f.detail)}"
                            for f in cause.findings)] if cause.findings else []
        for name, table in cause.tables.items():
            head = table.head(10)
            parts.append(f"### {_text(name.replace('_', ' '))}")
            parts.append(_md_table(head, [(c, c) for c in head.columns], left=("feature",)))
    return "\n\n".join(parts) + "\n"


def root_cause_html(causes: Iterable, *, title: str, model: str, policy: Policy) -> str:
    """The root-cause page (:func:`root_cause_markdown` rendered)."""
    return reporting.page(root_cause_markdown(causes, title=title, model=model, policy=policy), title)

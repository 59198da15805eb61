"""The governance document, generated from the policy file itself, so what it says and what the gates
enforce cannot disagree: thresholds, who intervenes, how clinicians are told, timelines. Markdown,
and an HTML page rendered by :func:`clinical_mlops.core.reporting.page`."""

from __future__ import annotations

from clinical_mlops.core import reporting
from clinical_mlops.governance.policy import SEVERITIES, Policy

__all__ = ["governance_html", "governance_markdown"]


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

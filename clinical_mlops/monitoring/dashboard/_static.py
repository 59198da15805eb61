"""The static dashboard page: what Evidently's panels cannot draw — per-window, per-group intervals (the
estimated band beside the realised confidence interval), the policy's bounds, windows awaiting labels marked
"estimated only", refused groups with their reason, incidents listed. Aggregates only."""

from __future__ import annotations

import base64
import io
import math

import pandas as pd

from clinical_mlops.core.reporting import format_number, page
from clinical_mlops.monitoring.dashboard._figures import Bounds, WindowFigures

__all__ = ["render_page"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _interval_figure(figures: list[WindowFigures], metric: str, attribute: str, title: str,
                     bound: tuple[float, ...], bound_label: str) -> str | None:
    """Estimated band (hollow) and realised interval (filled) per window and group; the bound as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, None] = {}
    for f in figures:
        m = f.metrics
        for g in m[(m["metric"] == metric) & (m["attribute"] == attribute)]["group"]:
            groups[str(g)] = None
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / max(1, len(groups))
    for gi, group in enumerate(groups):
        colour = _COLOURS[gi % len(_COLOURS)]
        for wi, f in enumerate(figures):
            m = f.metrics
            for kind, dx, face in (("estimated", -0.18, "none"), ("realised", 0.18, colour)):
                hit = m[(m["kind"] == kind) & (m["metric"] == metric) & (m["attribute"] == attribute)
                        & (m["group"] == group)]
                if hit.empty or pd.isna(hit.iloc[0]["estimate"]):
                    continue
                r = hit.iloc[0]
                x = wi - 0.4 + width * (gi + 0.5) + dx * width
                lo = r["estimate"] - r["lower"] if not pd.isna(r["lower"]) else 0.0
                hi = r["upper"] - r["estimate"] if not pd.isna(r["upper"]) else 0.0
                ax.errorbar([x], [r["estimate"]], yerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o", color=colour,
                            markerfacecolor=face, capsize=3, label=f"{group} {kind}")
    for line in bound:
        ax.axhline(line, color="black", linestyle="--", linewidth=1, label=bound_label)
    for wi, f in enumerate(figures):
        if f.status == "estimated_only":
            ax.axvspan(wi - 0.45, wi + 0.45, color="#fff3cd", zorder=0)
    ax.set_xticks(range(len(figures)))
    ax.set_xticklabels([f"{f.end:%Y-%m-%d}\n{'estimated only' if f.status == 'estimated_only' else f.status}"
                        for f in figures], fontsize=8)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(axis="y", alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def _cell(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format_number(v)


def _interval_table(figures: list[WindowFigures], metric: str, attribute: str) -> list[str]:
    lines = ["| window end | group | estimated | estimated band | realised | realised CI | status |",
             "|---|---|---|---|---|---|---|"]
    for f in figures:
        m = f.metrics
        part = m[(m["metric"] == metric) & (m["attribute"] == attribute)]
        for group in dict.fromkeys(part["group"]):
            cells = {}
            for kind in ("estimated", "realised"):
                hit = part[(part["kind"] == kind) & (part["group"] == group)]
                cells[kind] = hit.iloc[0] if len(hit) else None
            e, r = cells["estimated"], cells["realised"]
            e_band = "–" if e is None else f"[{_cell(e['lower'])}, {_cell(e['upper'])}]"
            r_band = "–" if r is None else f"[{_cell(r['lower'])}, {_cell(r['upper'])}]"
            status = " / ".join(str(x["status"]) for x in (e, r) if x is not None)
            lines.append(
                f"| {f.end:%Y-%m-%d} | {group} | {_cell(None if e is None else e['estimate'])} | "
                f"{e_band} | "
                f"{'awaiting labels' if r is None else _cell(r['estimate'])} | "
                f"{r_band} | {status} |")
    return lines


def render_page(cohort: str, figures: list[WindowFigures], attributes: list[str], b: Bounds,
                incidents: pd.DataFrame, evidently_project: str) -> str:
    """The page's HTML."""
    md = [f"# Monitoring dashboard: {cohort}", "",
          f"Evidently project **{evidently_project}** plots the series over time; this page adds the intervals.",
          f"Policy bounds: recall gap (group minus reference) not below **{_cell(-(b.recall_gap_max or 0))}** "
          f"(direction {b.recall_gap_direction}; dashed line), demographic-parity "
          f"ratio at least **{_cell(b.dp_ratio_min)}**.", "", "## Windows", "",
          "| window end | start | model version | rows | labelled | labels due | status | open incidents |",
          "|---|---|---|---|---|---|---|---|"]
    for f in figures:
        status = "**estimated only** (awaiting labels)" if f.status == "estimated_only" else f.status
        due = "–" if f.labels_due_at is None else f"{f.labels_due_at:%Y-%m-%d}"
        md.append(f"| {f.end:%Y-%m-%d %H:%M} | {f.start:%Y-%m-%d %H:%M} | {f.model_version} | {f.n} | "
                  f"{f.n_labelled} | {due} | {status} | {f.incidents_open} |")
    figs: list[str] = []
    gap_label = "policy bound " + " / ".join(_cell(x) for x in b.recall_gap_lines)
    dp_lines = () if b.dp_ratio_min is None else (b.dp_ratio_min,)
    sections = [("recall_gap", a, f"Recall gap by {a}", b.recall_gap_lines, gap_label) for a in attributes]
    sections += [("auroc", "overall", "AUROC overall", (), "")]
    sections += [("auroc", a, f"AUROC by {a}", (), "") for a in attributes]
    sections += [("demographic_parity_ratio", a, f"Demographic-parity ratio by {a}", dp_lines,
                  f"policy bound {_cell(b.dp_ratio_min)}") for a in attributes]
    for metric, attribute, title, bound, label in sections:
        png = _interval_figure(figures, metric, attribute, title, bound, label)
        if png is None:
            continue
        md += ["", f"## {title}", "",
               "Hollow: estimated before the labels (Monte Carlo band); filled: realised (bootstrap CI). "
               "Shaded windows are estimated only.", "", f"![{title}](data:image/png;base64,{png})", ""]
        md += _interval_table(figures, metric, attribute)
    refused = [(f, r) for f in figures for r in f.metrics.itertuples(index=False) if r.status == "refused"]
    md += ["", "## Refused estimates", ""]
    if refused:
        md += ["| window end | attribute | group | metric | reason |", "|---|---|---|---|---|"]
        md += [f"| {f.end:%Y-%m-%d} | {r.attribute} | {r.group} | {r.metric} | {r.reason or ''} |"
               for f, r in refused]
    else:
        md.append("No group's estimate was refused.")
    md += ["", "## Incidents", ""]
    if len(incidents):
        md += ["| opened at | severity | check | status | due by |", "|---|---|---|---|---|"]
        md += [f"| {r.opened_at:%Y-%m-%d %H:%M} | {r.severity} | `{r.check}` | {r.status} | {r.due_by:%Y-%m-%d %H:%M} |"
               for r in incidents.itertuples(index=False)]
    else:
        md.append("No incident recorded for this cohort.")
    md += ["", "Aggregates only: no row, no identifier leaves the warehouse."]
    return page("\n".join(md), f"Monitoring dashboard: {cohort}", extra_html="".join(figs))

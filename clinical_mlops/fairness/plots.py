"""The fairness report's figures, as PNG bytes (matplotlib, no display): a disparity forest plot per rule
and a per-group recall bar chart. Groups below :data:`~clinical_mlops.fairness.audit.SMALL_CELL` are
left out (small-cell suppression)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clinical_mlops.fairness.audit import SMALL_CELL, FairnessAudit

__all__ = ["plot_disparity", "plot_group_metric"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


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
    """Bar chart of one metric for each group of one slice with its interval (the reference in green)."""
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

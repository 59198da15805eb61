"""Confidence-based performance estimation (CBPE) per window, overall, per group and per intersection.

With calibrated scores ``s`` and the operating threshold (``f = 1[s >= t]``, the window's flags), the
labels of a window are unknown but expected: ``y ~ Bernoulli(s)``. Hence the expected confusion
matrix of every group: ``TP = Σ s·f``, ``FN = Σ s·(1-f)``, ``FP = Σ (1-s)·f``, ``TN = Σ (1-s)·(1-f)``,
and from it expected recall ``TP/(TP+FN)`` and precision ``TP/(TP+FP)`` (ratios of expectations).
Expected Brier is ``mean s(1-s)``; expected AUROC is the ratio of expected concordant pairs to expected
positive-negative pairs, ``Σ_{i≠j} s_i(1-s_j)(1[s_i>s_j] + ½·1[s_i=s_j]) / Σ_{i≠j} s_i(1-s_j)``.

**Bands** come from Monte Carlo: ``B`` label draws ``Y ~ Bernoulli(s)`` for the whole window at once
(seeded, vectorised: every per-group count is a matrix product of the draws with the rows' indicator
columns), so every group sees the *same* draws and the **recall gap** of a group against its slice's
reference group (``recall(group) - recall(reference)``, as the fairness audit signs it) gets a paired
percentile band. The band says where this window's realised figure should fall once its labels
arrive. Selection rate and the **demographic-parity ratio** (selection rate of the group over the
reference's, as the audit states it, judged against ``[min_ratio, 1/min_ratio]``) need no labels: they are
observed, not estimated; the ratio's band is a paired row bootstrap (Poisson(1) weights, shared by all groups).

Groups the calibration gate refused get no estimated figure (status ``refused``, the gate's reason);
their selection rate and parity ratio, which no label or calibration enters, are still reported.
An estimated recall gap whose band lies wholly beyond the policy's bound (in the rule's direction) for a
group of at least ``min_group_size`` rows has status ``warn``: the early warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from clinical_mlops.monitoring import settings
from clinical_mlops.monitoring.estimation._calibration import CalibrationGate
from clinical_mlops.monitoring.estimation._slices import group_slices

__all__ = ["ESTIMATED_METRICS", "ESTIMATE_COLUMNS", "estimate_window", "expected_auroc", "gap_breaches"]

ESTIMATED_METRICS = ("auroc", "recall", "precision", "brier", "selection_rate")
ESTIMATE_COLUMNS = ["attribute", "group", "n", "metric", "estimate", "lower", "upper", "status", "reason"]
_DRAW_CELLS = 4_000_000
"""Draws x rows simulated at a time (float32: 16 MB a block)."""


def expected_auroc(s: np.ndarray) -> float:
    """Expected AUROC of scores ``s`` when ``y ~ Bernoulli(s)`` (ratio of expected pair counts)."""
    s = np.sort(np.asarray(s, dtype=float))
    if s.size < 2:
        return float("nan")
    q = 1.0 - s
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    cq = np.concatenate([[0.0], np.cumsum(q)])
    tie = np.repeat(np.arange(start.size), counts)
    below = cq[start][tie]
    tied = (cq[start + counts] - cq[start])[tie] - q
    den = float(np.sum(s * (q.sum() - q)))
    return float(np.sum(s * (below + 0.5 * tied)) / den) if den > 0 else float("nan")


def gap_breaches(lower: float, upper: float, bound: float, direction: str) -> bool:
    """Whether a recall-gap band lies wholly beyond ``bound`` (``lower``: only a group doing worse)."""
    if np.isnan(lower) or np.isnan(upper):
        return False
    return upper < -bound if direction == "lower" else (upper < -bound or lower > bound)


def _band(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - confidence) / 2
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group with no draw defined: its band is NaN, said so
        return np.nanquantile(values, alpha, axis=0), np.nanquantile(values, 1 - alpha, axis=0)


def _simulate(s: np.ndarray, columns: np.ndarray, n_simulations: int, rng: np.random.Generator, *,
              poisson: bool) -> np.ndarray:
    """(B, k) sums of the columns over ``B`` draws: labels ~ Bernoulli(s), or Poisson(1) row weights."""
    n = s.shape[0]
    out = np.empty((n_simulations, columns.shape[1]), dtype=np.float64)
    step = max(1, _DRAW_CELLS // max(n, 1))
    for b in range(0, n_simulations, step):
        k = min(step, n_simulations - b)
        draws = (rng.poisson(1.0, size=(k, n)) if poisson else rng.random((k, n)) < s).astype(np.float32)
        out[b:b + k] = draws @ columns
    return out


def _ratio(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def estimate_window(
    rows: pd.DataFrame,
    policy,
    *,
    threshold: float,
    gate: CalibrationGate | None = None,
    n_simulations: int = settings.ESTIMATION_N_SIMULATIONS,
    seed: int = 0,
) -> pd.DataFrame:
    """Estimated metrics of a window's rows (``score``, ``flagged``, attributes), one row per
    (attribute, group, metric) in :data:`ESTIMATE_COLUMNS`; ``n_simulations=0``: point estimates only."""
    fp = policy.fairness
    s = rows["score"].to_numpy(dtype=float)
    f = (rows["flagged"].to_numpy(dtype=bool) if "flagged" in rows else s >= threshold).astype(float)
    slices = group_slices(rows, policy)
    groups = [(sl, g, label, sl.codes == g) for sl in slices for g, label in enumerate(sl.labels)]
    # Per group: positives, true positives, rank sum of positives, Brier term; flagged-weight; count weight.
    label_cols, weight_cols = [], []
    for sl, _, _, m in groups:
        r = np.zeros_like(s)
        r[m] = rankdata(s[m])
        label_cols += [m, f * m, r * m, (1 - 2 * s) * m]
        weight_cols += [m.astype(float), f * m]
    sims = n_simulations > 0 and len(s) > 0
    rng = np.random.default_rng(seed)
    if sims:
        lab = _simulate(s, np.column_stack(label_cols).astype(np.float32), n_simulations, rng, poisson=False)
        wts = _simulate(s, np.column_stack(weight_cols).astype(np.float32), n_simulations, rng, poisson=True)
    records: list[tuple] = []
    per_group: dict[tuple[str, str], dict] = {}
    for k, (sl, _, label, m) in enumerate(groups):
        sg, fg, n_g = s[m], f[m], int(m.sum())
        tp, pos, flagged = float(np.sum(sg * fg)), float(np.sum(sg)), float(fg.sum())
        point = {"auroc": expected_auroc(sg), "recall": tp / pos if pos > 0 else np.nan,
                 "precision": tp / flagged if flagged > 0 else np.nan,
                 "brier": float(np.mean(sg * (1 - sg))), "selection_rate": flagged / n_g}
        draws = {}
        if sims:
            p_b, tp_b, rs_b, br_b = (lab[:, 4 * k + j] for j in range(4))
            draws = {"recall": _ratio(tp_b, p_b), "precision": _ratio(tp_b, np.full_like(tp_b, flagged)),
                     "auroc": _ratio(rs_b - p_b * (p_b + 1) / 2, p_b * (n_g - p_b)),
                     "brier": (br_b + float(np.sum(sg ** 2))) / n_g,
                     "selection_rate": _ratio(wts[:, 2 * k + 1], wts[:, 2 * k])}
        refusal = gate.refusal(sl.name, label) if gate is not None else None
        per_group[(sl.name, label)] = {"point": point, "draws": draws, "n": n_g, "refusal": refusal}
        for metric in ESTIMATED_METRICS:
            lo, hi = _band(draws[metric], fp.confidence) if metric in draws else (np.nan, np.nan)
            if refusal is not None and metric != "selection_rate":
                records.append((sl.name, label, n_g, metric, np.nan, np.nan, np.nan, "refused", refusal))
            else:
                records.append((sl.name, label, n_g, metric, point[metric], float(lo), float(hi), "estimated",
                                "observed: needs no labels" if metric == "selection_rate"
                                else "expected from the calibrated scores"))
    records += _disparities(slices, per_group, policy)
    return pd.DataFrame(records, columns=ESTIMATE_COLUMNS).astype({"n": "int64"})


def _rule(policy, name: str):
    try:
        return policy.fairness.metric(name)
    except KeyError:
        return None


def _disparities(slices, per_group: dict, policy) -> list[tuple]:
    """Recall gap and parity ratio of every non-reference group against its slice's reference group."""
    fp = policy.fairness
    gap_rule, dp_rule = _rule(policy, "recall_gap"), _rule(policy, "demographic_parity_ratio")
    out = []
    for sl in slices[1:]:
        ref = per_group.get((sl.name, sl.reference))
        for label in sl.labels:
            if label == sl.reference:
                continue
            grp = per_group[(sl.name, label)]
            if ref is None:
                reason = f"reference group {sl.reference} of {sl.name} absent from the window"
                out += [(sl.name, label, grp["n"], m, np.nan, np.nan, np.nan, "insufficient_evidence", reason)
                        for m in ("recall_gap", "demographic_parity_ratio")]
                continue
            small = min(grp["n"], ref["n"]) < fp.min_group_size
            size_note = (f"; {min(grp['n'], ref['n'])} rows (fewer than {fp.min_group_size}): no verdict"
                         if small else "")
            # recall gap: an estimate, refused with either group
            refusal = grp["refusal"] or (ref["refusal"] and f"the reference group is refused: {ref['refusal']}")
            if refusal:
                out.append((sl.name, label, grp["n"], "recall_gap", np.nan, np.nan, np.nan, "refused", refusal))
            else:
                est = grp["point"]["recall"] - ref["point"]["recall"]
                lo, hi = (_band(grp["draws"]["recall"] - ref["draws"]["recall"], fp.confidence)
                          if grp["draws"] else (np.nan, np.nan))
                status, reason = "estimated", f"expected recall gap vs {sl.reference}{size_note}"
                if gap_rule is not None and not small and gap_breaches(float(lo), float(hi), gap_rule.bound,
                                                                       gap_rule.direction):
                    status = "warn"
                    reason = (f"group {label} of {sl.name}: expected recall gap {est:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                              f"vs {sl.reference} wholly beyond the bound {gap_rule.bound:g} before labels")
                out.append((sl.name, label, grp["n"], "recall_gap", est, float(lo), float(hi), status, reason))
            # parity ratio: observed selection rates, no labels and no calibration needed; group/reference as the
            # audit states it, judged against [bound, 1/bound]
            sg, sr = grp["point"]["selection_rate"], ref["point"]["selection_rate"]
            ratio = float(sg / sr) if sr > 0 else np.nan
            lo = hi = np.nan
            if grp["draws"]:
                lo, hi = _band(_ratio(grp["draws"]["selection_rate"], ref["draws"]["selection_rate"]), fp.confidence)
            status, reason = "estimated", f"observed selection-rate ratio vs {sl.reference}{size_note}"
            if dp_rule is not None and not small and (hi < dp_rule.bound or lo > 1 / dp_rule.bound):
                status = "warn"
                reason = (f"group {label} of {sl.name}: parity ratio {ratio:.3f} [{lo:.3f}, {hi:.3f}] vs "
                          f"{sl.reference} wholly outside [{dp_rule.bound:g}, {1 / dp_rule.bound:.3g}]")
            out.append((sl.name, label, grp["n"], "demographic_parity_ratio", ratio, float(lo), float(hi), status,
                        reason))
    return out

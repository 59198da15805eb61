"""Subgroup fairness audits with statistics, judged against the governance policy.

An audit takes held-out labels, risk scores and sensitive attributes, and the model's operating
threshold (``score >= threshold`` is an alert). For every group of every sensitive attribute and
every declared intersection (``race × gender``) it computes n, prevalence, selection rate, TPR
(recall), FPR, precision, AUROC and calibration-in-the-large (mean predicted risk minus observed
rate); then each group's disparities against the policy's reference group as differences and
ratios (recall gap, FPR gap, equalized-odds difference, demographic-parity ratio and difference,
calibration gap, precision and AUROC gaps).

Statistics
----------
* **Bootstrap intervals** for every group metric and every disparity: the whole evaluation set is
  resampled (multinomial count weights, ``policy.fairness.n_bootstrap`` replicates, a fixed
  seed), each group's metric and its reference's are recomputed on the same replicate, and the
  percentile interval of the replicate disparities is reported at ``policy.fairness.confidence``.
  Above ``exact_max_rows`` predictions (50k by default; the row path took 154 s at 200k) the replicates are drawn as multinomial
  counts over (group, score bin, label) cells (:mod:`clinical_mlops.core.binned_bootstrap`, 1,000
  score quantile bins): the same resampling distribution for every count-based metric, AUROC
  and mean score approximated within a bin. Point estimates are always exact. The audit records
  which (``bootstrap_method``, ``score_bins``).
* **Significance of recall gaps**: a two-proportion z-test of each group's recall against the
  reference group's, across all groups of all slices, corrected for multiple comparisons with
  Holm (family-wise error) or Benjamini–Hochberg (false discovery rate), as the policy says.

Verdicts
--------
For each policy metric and each non-reference group: ``fail`` only when the whole interval lies
outside the policy bound (evidence of a breach); ``pass`` only when the whole interval lies
inside it (evidence of compliance); otherwise ``insufficient_evidence`` — as it is, always, for a
group (or reference) below ``min_group_size`` or a metric that is undefined. A small group is
never a pass.

No row-level data leaves this module: audits are aggregates per group.
"""

from __future__ import annotations

import json
import math
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
from scipy.stats import norm

from clinical_mlops.core import binned_bootstrap as binned
from clinical_mlops.governance.policy import MetricRule, Policy
from clinical_mlops.core.warehouse import transaction

__all__ = [
    "DISPARITY_METRICS",
    "GROUP_METRICS",
    "FairnessAudit",
    "adjust_p_values",
    "audit",
    "audit_arrays",
    "audit_model",
    "confusion_rates",
    "ensure_tables",
    "latest_verdicts",
    "slices_from_codes",
    "store_audit",
    "summary_for",
    "two_proportion_z_test",
]

INTERSECTION_SEPARATOR = " × "
MISSING_GROUP = "missing"
GROUP_METRICS: tuple[str, ...] = (
    "prevalence", "selection_rate", "tpr", "fpr", "precision", "auroc", "calibration", "mean_score",
)
"""Per-group metrics; ``calibration`` is calibration-in-the-large (mean score minus observed rate)."""

DISPARITY_METRICS: dict[str, tuple[str, str]] = {
    # name: (kind, description)
    "recall_gap": ("difference", "TPR(group) - TPR(reference)"),
    "recall_ratio": ("ratio", "TPR(group) / TPR(reference)"),
    "fpr_gap": ("difference", "FPR(group) - FPR(reference)"),
    "equalized_odds_difference": ("difference", "max(|TPR gap|, |FPR gap|)"),
    "demographic_parity_difference": ("difference", "selection rate(group) - selection rate(reference)"),
    "demographic_parity_ratio": ("ratio", "selection rate(group) / selection rate(reference)"),
    "precision_gap": ("difference", "precision(group) - precision(reference)"),
    "auroc_gap": ("difference", "AUROC(group) - AUROC(reference)"),
    "calibration_gap": ("difference", "calibration-in-the-large(group) - (reference)"),
    "prevalence_difference": ("difference", "observed rate(group) - observed rate(reference)"),
}
NONNEGATIVE_DISPARITIES = frozenset({"equalized_odds_difference"})
VERDICTS: tuple[str, ...] = ("pass", "fail", "insufficient_evidence")

_BLOCK_BYTES = 32 * 1024 * 1024

EXACT_MAX_ROWS = 50_000
"""Above this many predictions the bootstrap draws cell counts (``binned_bootstrap``) instead of
row weights; point estimates stay exact."""


# --------------------------------------------------------------------------------------------
# Plain statistics (independent of the bootstrap; used by tests as the cross-check)
# --------------------------------------------------------------------------------------------


def confusion_rates(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """TPR, FPR, precision and selection rate from a plain confusion matrix (NaN if undefined)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "tpr": ratio(tp, tp + fn), "fpr": ratio(fp, fp + tn), "precision": ratio(tp, tp + fp),
        "selection_rate": ratio(tp + fp, tp + fp + fn + tn), "prevalence": ratio(tp + fn, tp + fp + fn + tn),
    }


def two_proportion_z_test(x1: float, n1: float, x2: float, n2: float) -> float:
    """Two-sided p-value of H0: p1 == p2 (pooled z-test); NaN when a sample is empty."""
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if x1 / n1 == x2 / n2 else 0.0
    z = (x1 / n1 - x2 / n2) / se
    return float(2 * norm.sf(abs(z)))


def adjust_p_values(p_values: Sequence[float], method: str) -> np.ndarray:
    """Multiple-comparison adjusted p-values (NaNs stay NaN and are not counted).

    ``holm`` (step-down, family-wise error), ``benjamini_hochberg`` (step-up, false discovery
    rate), ``bonferroni`` or ``none``.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    order = np.argsort(q, kind="stable")
    ranked = q[order]
    if method == "none":
        adjusted = ranked
    elif method == "bonferroni":
        adjusted = np.minimum(ranked * m, 1.0)
    elif method == "holm":
        adjusted = np.minimum(np.maximum.accumulate(ranked * (m - np.arange(m))), 1.0)
    elif method == "benjamini_hochberg":
        scaled = ranked * m / np.arange(1, m + 1)
        adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    else:
        raise ValueError(f"unknown correction {method!r}")
    back = np.empty(m)
    back[order] = adjusted
    out[ok] = back
    return out


# --------------------------------------------------------------------------------------------
# Weighted group metrics, vectorised over bootstrap replicates
# --------------------------------------------------------------------------------------------


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b > 0)
    return out


@dataclass(frozen=True)
class _Slice:
    name: str
    attributes: tuple[str, ...]
    reference: str
    labels: list[str]
    codes: np.ndarray  # group code per row


def _group_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    text = values.astype("object").where(values.notna(), MISSING_GROUP).map(str)
    codes, uniques = pd.factorize(text, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def _slices(frame: pd.DataFrame, policy: Policy) -> list[_Slice]:
    slices = []
    present = [a for a in policy.fairness.sensitive_attributes if a.name in frame.columns]
    for attr in present:
        codes, labels = _group_codes(frame[attr.name])
        slices.append(_Slice(attr.name, (attr.name,), attr.reference, labels, codes))
    names = {a.name for a in present}
    for combo in policy.fairness.intersections:
        if not set(combo) <= names:
            continue
        text = frame[list(combo)].astype("object").fillna(MISSING_GROUP).astype(str)
        joined = text.agg(INTERSECTION_SEPARATOR.join, axis=1)
        codes, labels = _group_codes(joined)
        reference = INTERSECTION_SEPARATOR.join(policy.fairness.attribute(a).reference for a in combo)
        slices.append(_Slice(INTERSECTION_SEPARATOR.join(combo), tuple(combo), reference, labels, codes))
    return slices


def _joined(a: tuple[np.ndarray, list[str]], b: tuple[np.ndarray, list[str]]) -> tuple[np.ndarray, list[str]]:
    """Codes and sorted labels of the groups present in the intersection of two coded attributes."""
    combined = a[0] * len(b[1]) + b[0]
    present, inverse = np.unique(combined, return_inverse=True)
    text = [a[1][int(c) // len(b[1])] + INTERSECTION_SEPARATOR + b[1][int(c) % len(b[1])] for c in present]
    order = sorted(range(len(text)), key=text.__getitem__)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], [text[i] for i in order]


def slices_from_codes(attributes: Mapping[str, tuple[np.ndarray, list[str]]], policy: Policy) -> list[_Slice]:
    """The policy's slices from coded attributes (codes into sorted labels, missing as ``missing``).

    The same groups, labels and order as the slices of a frame (:func:`audit`).
    """
    slices = []
    present = [a for a in policy.fairness.sensitive_attributes if a.name in attributes]
    for attr in present:
        codes, labels = attributes[attr.name]
        slices.append(_Slice(attr.name, (attr.name,), attr.reference, list(labels), np.asarray(codes, dtype=np.int64)))
    names = {a.name for a in present}
    for combo in policy.fairness.intersections:
        if not set(combo) <= names:
            continue
        joined = attributes[combo[0]]
        for other in combo[1:]:
            joined = _joined(joined, attributes[other])
        reference = INTERSECTION_SEPARATOR.join(policy.fairness.attribute(a).reference for a in combo)
        slices.append(_Slice(INTERSECTION_SEPARATOR.join(combo), tuple(combo), reference, joined[1], joined[0]))
    return slices


def _weighted_auroc(w: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC of one group for each row of count weights ``w`` (replicates x group rows); ties count half."""
    if y.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    wo = w[:, order]
    pos = np.add.reduceat(wo * y_sorted, starts, axis=1)
    neg = np.add.reduceat(wo * (1.0 - y_sorted), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return _div(num, pos.sum(axis=1) * neg.sum(axis=1))


def _slice_metrics(w: np.ndarray, y: np.ndarray, s: np.ndarray, pred: np.ndarray, sl: _Slice) -> np.ndarray:
    """Group metrics (replicates x groups x len(GROUP_METRICS)) plus counts in a second array."""
    n_groups = len(sl.labels)
    feats = np.stack([np.ones_like(y), y, pred, pred * y, s], axis=1)  # rows x 5
    onehot = np.zeros((y.shape[0], n_groups))
    onehot[np.arange(y.shape[0]), sl.codes] = 1.0
    design = (onehot[:, :, None] * feats[:, None, :]).reshape(y.shape[0], n_groups * 5)
    sums = (w @ design).reshape(w.shape[0], n_groups, 5)
    total, pos, flagged, tp, ssum = (sums[..., k] for k in range(5))
    out = np.full((w.shape[0], n_groups, len(GROUP_METRICS)), np.nan)
    out[..., 0] = _div(pos, total)
    out[..., 1] = _div(flagged, total)
    out[..., 2] = _div(tp, pos)
    out[..., 3] = _div(flagged - tp, total - pos)
    out[..., 4] = _div(tp, flagged)
    for g in range(n_groups):
        rows = np.flatnonzero(sl.codes == g)
        out[:, g, 5] = _weighted_auroc(w[:, rows], y[rows], s[rows])
    out[..., 7] = _div(ssum, total)
    out[..., 6] = out[..., 7] - out[..., 0]
    return out, np.stack([total, pos], axis=-1)


def _cell_metrics(count: np.ndarray, score_sum: np.ndarray, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group metrics (replicates x groups x len(GROUP_METRICS)) and [n, positives] from cell counts.

    ``count`` is (replicates, groups, keys, 2) in ascending score-key order, ``score_sum`` the
    (replicates, groups) sums of scores and ``flagged`` which keys are alerts.
    """
    total = count.sum(axis=(2, 3))
    pos = count[..., 1].sum(axis=2)
    alerts = count[:, :, flagged, :].sum(axis=(2, 3))
    tp = count[:, :, flagged, 1].sum(axis=2)
    out = np.full((*total.shape, len(GROUP_METRICS)), np.nan)
    out[..., 0] = _div(pos, total)
    out[..., 1] = _div(alerts, total)
    out[..., 2] = _div(tp, pos)
    out[..., 3] = _div(alerts - tp, total - pos)
    out[..., 4] = _div(tp, alerts)
    out[..., 5] = binned.auroc(count)
    out[..., 7] = _div(score_sum, total)
    out[..., 6] = out[..., 7] - out[..., 0]
    return out, np.stack([total, pos], axis=-1)


def _binned_slice(keys: binned.ScoreKeys, y: np.ndarray, s: np.ndarray, sl: _Slice, n_boot: int,
                  rng: np.random.Generator) -> tuple[tuple[np.ndarray, np.ndarray], list[np.ndarray]]:
    """Exact point metrics of one slice and bootstrap replicates drawn over its cells."""
    n_groups = len(sl.labels)
    table = binned.cells(keys, y, s, sl.codes, n_groups)
    est, counts = _cell_metrics(table.count[None], table.score_sum.sum(axis=(1, 2))[None], keys.flagged)
    for g in range(n_groups):  # AUROC on the rows themselves (cells tie the rows of a bin)
        rows = np.flatnonzero(sl.codes == g)
        est[0, g, 5] = _weighted_auroc(np.ones((1, rows.shape[0])), y[rows], s[rows])[0]
    score_mean = table.mean(table.score_sum)
    reps = [_cell_metrics(block, (block * score_mean).sum(axis=(2, 3)), keys.flagged)[0]
            for block in binned.replicate_blocks(table, n_boot, rng)]
    return (est, counts), reps


def _disparities(metrics: np.ndarray, ref: int) -> dict[str, np.ndarray]:
    """Disparity arrays (replicates x groups) of every group against group ``ref``."""
    idx = {m: k for k, m in enumerate(GROUP_METRICS)}

    def col(name: str) -> np.ndarray:
        return metrics[..., idx[name]]

    def ref_col(name: str) -> np.ndarray:
        return metrics[:, ref : ref + 1, idx[name]]

    tpr_gap = col("tpr") - ref_col("tpr")
    fpr_gap = col("fpr") - ref_col("fpr")
    with np.errstate(invalid="ignore"):
        eod = np.fmax(np.abs(tpr_gap), np.abs(fpr_gap))
        eod[np.isnan(tpr_gap) | np.isnan(fpr_gap)] = np.nan
    return {
        "recall_gap": tpr_gap,
        "recall_ratio": _div(col("tpr"), np.broadcast_to(ref_col("tpr"), tpr_gap.shape)),
        "fpr_gap": fpr_gap,
        "equalized_odds_difference": eod,
        "demographic_parity_difference": col("selection_rate") - ref_col("selection_rate"),
        "demographic_parity_ratio": _div(col("selection_rate"), np.broadcast_to(ref_col("selection_rate"), tpr_gap.shape)),
        "precision_gap": col("precision") - ref_col("precision"),
        "auroc_gap": col("auroc") - ref_col("auroc"),
        "calibration_gap": col("calibration") - ref_col("calibration"),
        "prevalence_difference": col("prevalence") - ref_col("prevalence"),
    }


def _interval(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over replicates (axis 0), ignoring replicates where a metric is undefined."""
    alpha = (1 - confidence) / 2
    if reps.shape[0] == 0:
        nan = np.full(reps.shape[1:], np.nan)
        return nan, nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
        lo, hi = np.nanquantile(reps, [alpha, 1 - alpha], axis=0)
    return lo, hi


# --------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOutcome:
    """How one policy metric fared across all groups: the basis of one asset check."""

    rule: MetricRule
    failing: pd.DataFrame  # verdict rows with verdict == "fail"
    counts: dict[str, int]

    @property
    def passed(self) -> bool:
        return self.failing.empty

    def evidence(self, limit: int = 10) -> list[dict]:
        rows = self.failing.sort_values("estimate", key=lambda s: -s.abs()).head(limit)
        return [
            {
                "slice": r.slice, "group": r.group, "reference": r.reference, "n": int(r.n),
                "estimate": round(float(r.estimate), 4),
                "ci": [round(float(r.lower), 4), round(float(r.upper), 4)],
                "bound": r.bound,
            }
            for r in rows.itertuples(index=False)
        ]


@dataclass(frozen=True)
class FairnessAudit:
    """Everything one audit found; all tables are aggregates per group."""

    groups: pd.DataFrame
    disparities: pd.DataFrame
    verdicts: pd.DataFrame
    threshold: float
    n: int
    n_positive: int
    policy_sha256: str
    policy_version: str
    confidence: float
    n_bootstrap: int
    seed: int
    correction: str
    rules: tuple[MetricRule, ...] = field(default=())
    bootstrap_method: str = "rows"
    """``rows`` (count weights per row) or ``binned`` (multinomial cell counts, see binned_bootstrap)."""
    score_bins: int | None = None
    """Score quantile bins of a binned bootstrap (None for ``rows``)."""
    exact_max_rows: int | None = None
    """The size above which the bootstrap is binned."""

    def outcome(self, rule_name: str) -> RuleOutcome:
        rule = next(r for r in self.rules if r.name == rule_name)
        rows = self.verdicts[self.verdicts["rule"] == rule_name]
        counts = {v: int((rows["verdict"] == v).sum()) for v in VERDICTS}
        return RuleOutcome(rule=rule, failing=rows[rows["verdict"] == "fail"], counts=counts)

    def outcomes(self) -> list[RuleOutcome]:
        return [self.outcome(r.name) for r in self.rules]

    @property
    def verdict_counts(self) -> dict[str, int]:
        return {v: int((self.verdicts["verdict"] == v).sum()) for v in VERDICTS}

    @property
    def failing(self) -> pd.DataFrame:
        return self.verdicts[self.verdicts["verdict"] == "fail"]

    @property
    def blocking_failed(self) -> bool:
        return bool(self.failing["blocking"].any()) if not self.failing.empty else False

    def disparity(self, slice_name: str, group: str, metric: str) -> dict[str, float] | None:
        rows = self.disparities[
            (self.disparities["slice"] == slice_name) & (self.disparities["group"] == group)
            & (self.disparities["metric"] == metric)
        ]
        if rows.empty:
            return None
        r = rows.iloc[0]
        return {"estimate": float(r["estimate"]), "lower": float(r["lower"]), "upper": float(r["upper"])}


def _verdict(rule: MetricRule, metric: str, est: float, lo: float, hi: float, n: int, ref_n: int,
             min_group_size: int) -> tuple[str, str]:
    if n < min_group_size:
        return "insufficient_evidence", f"group n={n} is below min_group_size={min_group_size}"
    if ref_n < min_group_size:
        return "insufficient_evidence", f"reference group n={ref_n} is below min_group_size={min_group_size}"
    if any(math.isnan(v) for v in (est, lo, hi)):
        return "insufficient_evidence", "metric undefined for this group (no positives, negatives or alerts)"
    if rule.kind == "ratio":
        low, high = rule.bound, 1.0 / rule.bound
        if hi < low or lo > high:
            return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely outside [{low:.3f}, {high:.3f}]"
        if lo >= low and hi <= high:
            return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies within [{low:.3f}, {high:.3f}]"
        return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound {rule.bound:g}"
    b = rule.bound
    if metric in NONNEGATIVE_DISPARITIES:
        if lo > b:
            return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely above {b:g}"
        if hi <= b:
            return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies within [0, {b:g}]"
        return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound {b:g}"
    if rule.direction == "lower":  # only a group worse than the reference breaches
        if hi < -b:
            return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely below -{b:g}"
        if lo >= -b:
            return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies above -{b:g}"
        return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound -{b:g}"
    if lo > b or hi < -b:
        return "fail", f"interval [{lo:.3f}, {hi:.3f}] lies entirely outside ±{b:g}"
    if lo >= -b and hi <= b:
        return "pass", f"interval [{lo:.3f}, {hi:.3f}] lies within ±{b:g}"
    return "insufficient_evidence", f"interval [{lo:.3f}, {hi:.3f}] straddles the bound ±{b:g}"


def audit(
    frame: pd.DataFrame,
    *,
    threshold: float,
    policy: Policy,
    n_bootstrap: int | None = None,
    seed: int | None = None,
    label_column: str = "label",
    score_column: str = "score",
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = binned.DEFAULT_BINS,
) -> FairnessAudit:
    """Audit held-out predictions (``frame``: label, score and sensitive attribute columns)."""
    if frame.empty:
        raise ValueError("cannot audit an empty set of predictions")
    y = frame[label_column].to_numpy(dtype=float)
    s = frame[score_column].to_numpy(dtype=float)
    slices = _slices(frame, policy)
    return audit_arrays(y, s, slices, threshold=threshold, policy=policy, n_bootstrap=n_bootstrap, seed=seed,
                        exact_max_rows=exact_max_rows, score_bins=score_bins)


def audit_arrays(
    y: np.ndarray,
    s: np.ndarray,
    slices: list[_Slice],
    *,
    threshold: float,
    policy: Policy,
    n_bootstrap: int | None = None,
    seed: int | None = None,
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = binned.DEFAULT_BINS,
) -> FairnessAudit:
    """Audit labels ``y``, scores ``s`` and group codes per slice (see :func:`slices_from_codes`)."""
    fp = policy.fairness
    n_boot = fp.n_bootstrap if n_bootstrap is None else int(n_bootstrap)
    seed = fp.bootstrap_seed if seed is None else int(seed)
    y = np.asarray(y, dtype=float)
    s = np.asarray(s, dtype=float)
    if y.size == 0:
        raise ValueError("cannot audit an empty set of predictions")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    n = y.shape[0]
    if not slices:
        raise ValueError(f"none of the policy's sensitive attributes {fp.attribute_names} are in the data")

    method = "rows" if n <= exact_max_rows else "binned"
    if method == "rows":
        pred = (s >= threshold).astype(float)
        ones = np.ones((1, n))
        point = [_slice_metrics(ones, y, s, pred, sl) for sl in slices]
        reps: list[list[np.ndarray]] = [[] for _ in slices]
        if n_boot > 0:
            rng = np.random.default_rng(seed)
            block = max(1, min(n_boot, _BLOCK_BYTES // (8 * n * 6)))
            done = 0
            while done < n_boot:
                b = min(block, n_boot - done)
                w = np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(b)]).astype(float)
                for k, sl in enumerate(slices):
                    reps[k].append(_slice_metrics(w, y, s, pred, sl)[0])
                done += b
    else:
        keys = binned.score_keys(s, threshold, score_bins)
        rng = np.random.default_rng(seed)
        point, reps = [], []
        for sl in slices:
            slice_point, slice_reps = _binned_slice(keys, y, s, sl, n_boot, rng)
            point.append(slice_point)
            reps.append(slice_reps)

    group_rows, disparity_rows = [], []
    for k, sl in enumerate(slices):
        est, counts = point[k]
        rep = np.concatenate(reps[k]) if reps[k] else np.empty((0, *est.shape[1:]))
        lo, hi = _interval(rep, fp.confidence)
        ref_code = sl.labels.index(sl.reference) if sl.reference in sl.labels else None
        for g, label in enumerate(sl.labels):
            ng, npos = int(counts[0, g, 0]), int(counts[0, g, 1])
            for m, metric in enumerate(GROUP_METRICS):
                group_rows.append((sl.name, label, label == sl.reference, ng, npos, metric,
                                   est[0, g, m], lo[g, m], hi[g, m]))
        if ref_code is None:
            continue
        d_est = _disparities(est, ref_code)
        d_rep = _disparities(rep, ref_code) if rep.shape[0] else {k2: np.empty((0, len(sl.labels))) for k2 in d_est}
        ref_n, ref_pos = int(counts[0, ref_code, 0]), int(counts[0, ref_code, 1])
        ref_tp = est[0, ref_code, 2] * ref_pos if ref_pos else 0.0
        for g, label in enumerate(sl.labels):
            if g == ref_code:
                continue
            ng, npos = int(counts[0, g, 0]), int(counts[0, g, 1])
            p_value = float("nan")
            if ng >= fp.min_group_size and ref_n >= fp.min_group_size and npos > 0 and ref_pos > 0:
                p_value = two_proportion_z_test(est[0, g, 2] * npos, npos, ref_tp, ref_pos)
            for metric, (kind, _) in DISPARITY_METRICS.items():
                dlo, dhi = _interval(d_rep[metric][:, g : g + 1], fp.confidence)
                disparity_rows.append((sl.name, label, sl.reference, ng, npos, ref_n, metric, kind,
                                       float(d_est[metric][0, g]), float(dlo[0]), float(dhi[0]),
                                       p_value if metric == "recall_gap" else float("nan")))

    groups = pd.DataFrame(group_rows, columns=["slice", "group", "is_reference", "n", "n_positive", "metric",
                                               "estimate", "lower", "upper"])
    disparities = pd.DataFrame(disparity_rows, columns=["slice", "group", "reference", "n", "n_positive",
                                                        "reference_n", "metric", "kind", "estimate", "lower",
                                                        "upper", "p_value"])
    recall = disparities["metric"] == "recall_gap"
    disparities["p_adjusted"] = np.nan
    if recall.any():
        disparities.loc[recall, "p_adjusted"] = adjust_p_values(
            disparities.loc[recall, "p_value"].to_numpy(), fp.significance.correction
        )
    disparities["significant"] = disparities["p_adjusted"] < fp.significance.alpha

    verdict_rows = []
    for rule in fp.metrics:
        rows = disparities[disparities["metric"] == rule.name]
        for r in rows.itertuples(index=False):
            verdict, reason = _verdict(rule, rule.name, r.estimate, r.lower, r.upper, int(r.n),
                                       int(r.reference_n), fp.min_group_size)
            verdict_rows.append((r.slice, r.group, r.reference, int(r.n), rule.name, rule.severity, rule.blocking,
                                 rule.bound, rule.kind, r.estimate, r.lower, r.upper, r.p_adjusted, verdict, reason))
    verdicts = pd.DataFrame(verdict_rows, columns=["slice", "group", "reference", "n", "rule", "severity", "blocking",
                                                   "bound", "kind", "estimate", "lower", "upper", "p_adjusted",
                                                   "verdict", "reason"])
    return FairnessAudit(
        groups=groups, disparities=disparities, verdicts=verdicts, threshold=float(threshold), n=n,
        n_positive=int(y.sum()), policy_sha256=policy.sha256, policy_version=policy.version,
        confidence=fp.confidence, n_bootstrap=n_boot, seed=seed, correction=fp.significance.correction,
        rules=fp.metrics, bootstrap_method=method, score_bins=score_bins if method == "binned" else None,
        exact_max_rows=int(exact_max_rows),
    )


# --------------------------------------------------------------------------------------------
# Warehouse: time series of metrics and verdicts
# --------------------------------------------------------------------------------------------

FAIRNESS_DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS monitoring",
    """CREATE TABLE IF NOT EXISTS monitoring.fairness_metrics (
    audit_id VARCHAR NOT NULL,
    evaluated_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    model_role VARCHAR NOT NULL,
    slice VARCHAR NOT NULL,                -- attribute, or attributes joined by ' × '
    "group" VARCHAR NOT NULL,
    reference_group VARCHAR,
    kind VARCHAR NOT NULL,                 -- group | difference | ratio
    metric VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    n_positive BIGINT NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE,
    p_value DOUBLE,
    p_adjusted DOUBLE,
    operating_threshold DOUBLE NOT NULL,
    policy_version VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS monitoring.fairness_verdicts (
    audit_id VARCHAR NOT NULL,
    evaluated_at TIMESTAMP NOT NULL,
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    model_role VARCHAR NOT NULL,
    slice VARCHAR NOT NULL,
    "group" VARCHAR NOT NULL,
    reference_group VARCHAR NOT NULL,
    n BIGINT NOT NULL,
    rule VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    blocking BOOLEAN NOT NULL,
    bound DOUBLE NOT NULL,
    estimate DOUBLE,
    lower DOUBLE,
    upper DOUBLE,
    p_adjusted DOUBLE,
    verdict VARCHAR NOT NULL,             -- pass | fail | insufficient_evidence
    reason VARCHAR NOT NULL,
    policy_version VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL
)""",
)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in FAIRNESS_DDL:
        con.execute(statement)


def store_audit(
    con: duckdb.DuckDBPyConnection,
    result: FairnessAudit,
    *,
    cohort: str,
    model_name: str,
    model_version: str,
    model_role: str,
    evaluated_at: datetime | None = None,
) -> str:
    """Append the audit's metrics and verdicts (each row with the policy hash); returns the audit id."""
    ensure_tables(con)
    audit_id = uuid.uuid4().hex[:16]
    now = evaluated_at or datetime.now(UTC).replace(tzinfo=None)
    common = dict(audit_id=audit_id, evaluated_at=now, cohort=cohort, model_name=model_name,
                  model_version=str(model_version), model_role=model_role)
    g = result.groups
    group_rows = pd.DataFrame({
        **{k: [v] * len(g) for k, v in common.items()},
        "slice": g["slice"], "group": g["group"],
        "reference_group": np.where(g["is_reference"], g["group"], None),
        "kind": "group", "metric": g["metric"], "n": g["n"], "n_positive": g["n_positive"],
        "estimate": g["estimate"], "lower": g["lower"], "upper": g["upper"],
        "p_value": np.nan, "p_adjusted": np.nan,
    })
    d = result.disparities
    disparity_rows = pd.DataFrame({
        **{k: [v] * len(d) for k, v in common.items()},
        "slice": d["slice"], "group": d["group"], "reference_group": d["reference"], "kind": d["kind"],
        "metric": d["metric"], "n": d["n"], "n_positive": d["n_positive"], "estimate": d["estimate"],
        "lower": d["lower"], "upper": d["upper"], "p_value": d["p_value"], "p_adjusted": d["p_adjusted"],
    })
    metrics = pd.concat([group_rows, disparity_rows], ignore_index=True)
    metrics["operating_threshold"] = result.threshold
    metrics["policy_version"] = result.policy_version
    metrics["policy_sha256"] = result.policy_sha256
    v = result.verdicts
    verdicts = pd.DataFrame({
        **{k: [val] * len(v) for k, val in common.items()},
        "slice": v["slice"], "group": v["group"], "reference_group": v["reference"], "n": v["n"],
        "rule": v["rule"], "severity": v["severity"], "blocking": v["blocking"].astype(bool), "bound": v["bound"],
        "estimate": v["estimate"], "lower": v["lower"], "upper": v["upper"], "p_adjusted": v["p_adjusted"],
        "verdict": v["verdict"], "reason": v["reason"],
        "policy_version": result.policy_version, "policy_sha256": result.policy_sha256,
    })
    con.register("fairness_metric_rows", metrics)
    con.register("fairness_verdict_rows", verdicts)
    try:
        with transaction(con):
            con.execute("INSERT INTO monitoring.fairness_metrics BY NAME SELECT * FROM fairness_metric_rows")
            if not verdicts.empty:
                con.execute("INSERT INTO monitoring.fairness_verdicts BY NAME SELECT * FROM fairness_verdict_rows")
    finally:
        con.unregister("fairness_metric_rows")
        con.unregister("fairness_verdict_rows")
    return audit_id


def predictions_with_attributes(
    con: duckdb.DuckDBPyConnection, features_table: str, attributes: Iterable[str], model_name: str, version: str
) -> pd.DataFrame:
    """Test-split labels and scores of one model version joined with the sensitive attributes."""
    cols = ", ".join(f"f.{a}" for a in dict.fromkeys(attributes))
    return con.execute(
        f"""SELECT p.label, p.score, {cols}
            FROM ml.predictions p JOIN {features_table} f USING (encounter_id)
            WHERE p.model_name = ? AND p.model_version = ? AND p.split = 'test'
            ORDER BY p.encounter_id""",
        [model_name, str(version)],
    ).df()


def audit_model(
    con: duckdb.DuckDBPyConnection,
    *,
    cohort: str,
    features_table: str,
    model: Mapping[str, object],
    policy: Policy,
    n_bootstrap: int | None = None,
    store: bool = True,
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = binned.DEFAULT_BINS,
) -> tuple[FairnessAudit, str | None]:
    """Audit one registered model version (a ``ml.model_versions`` row) and store the result.

    The test predictions are fetched as numbers (labels, scores, group codes): no frame of rows.
    """
    attributes = list(dict.fromkeys(policy.fairness.attribute_names))
    cols = ", ".join(f"f.{a}" for a in attributes)
    source = (f"SELECT p.encounter_id, p.label, p.score, {cols} FROM ml.predictions p "
              f"JOIN {features_table} f USING (encounter_id) "
              "WHERE p.model_name = ? AND p.model_version = ? AND p.split = 'test'")
    y, s, coded = binned.coded_predictions(con, source, [str(model["model_name"]), str(model["model_version"])],
                                           attributes, missing=MISSING_GROUP)
    if y.size == 0:
        raise ValueError(f"no test predictions for {model['model_name']} v{model['model_version']}")
    result = audit_arrays(y, s, slices_from_codes(coded, policy), threshold=float(model["operating_threshold"]),
                          policy=policy, n_bootstrap=n_bootstrap, exact_max_rows=exact_max_rows,
                          score_bins=score_bins)
    audit_id = None
    if store:
        audit_id = store_audit(con, result, cohort=cohort, model_name=str(model["model_name"]),
                               model_version=str(model["model_version"]), model_role=str(model["role"]))
    return result, audit_id


def latest_verdicts(con: duckdb.DuckDBPyConnection, cohort: str, role: str = "candidate") -> pd.DataFrame:
    """The verdict rows of the most recent audit of the cohort's model in ``role`` (empty if none)."""
    ensure_tables(con)
    return con.execute(
        """SELECT * FROM monitoring.fairness_verdicts
           WHERE audit_id = (SELECT audit_id FROM monitoring.fairness_verdicts
                             WHERE cohort = ? AND model_role = ? ORDER BY evaluated_at DESC LIMIT 1)
           ORDER BY rule, slice, "group" """,
        [cohort, role],
    ).df()


def _latest_recall_gaps(con: duckdb.DuckDBPyConnection, cohort: str, role: str) -> pd.DataFrame:
    return con.execute(
        """SELECT * FROM monitoring.fairness_metrics
           WHERE metric = 'recall_gap' AND audit_id = (
               SELECT audit_id FROM monitoring.fairness_metrics WHERE cohort = ? AND model_role = ?
               ORDER BY evaluated_at DESC LIMIT 1)""",
        [cohort, role],
    ).df()


def _round(value: object, digits: int = 4) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else round(v, digits)


def summary_for(con: duckdb.DuckDBPyConnection, cohort: str) -> dict:
    """Verdicts of the latest candidate and mitigated audits, and the recall gap before and after.

    The group followed is the one with the largest failing recall gap of the candidate (else the
    largest recall gap among groups of at least the minimum size that were judged). JSON-ready.
    """
    ensure_tables(con)
    summary: dict = {"cohort": cohort}
    for role in ("candidate", "mitigated"):
        verdicts = latest_verdicts(con, cohort, role)
        if verdicts.empty:
            summary[role] = None
            continue
        failing = verdicts[verdicts["verdict"] == "fail"]
        summary[role] = {
            "model": f"{verdicts['model_name'].iloc[0]} v{verdicts['model_version'].iloc[0]}",
            "policy_version": verdicts["policy_version"].iloc[0],
            "policy_sha256": verdicts["policy_sha256"].iloc[0],
            "verdicts": {v: int((verdicts["verdict"] == v).sum()) for v in VERDICTS},
            "blocking_failed": bool(failing["blocking"].any()) if not failing.empty else False,
            "failing": [
                {"rule": r.rule, "slice": r.slice, "group": r.group, "severity": r.severity,
                 "estimate": _round(r.estimate), "ci": [_round(r.lower), _round(r.upper)]}
                for r in failing.itertuples(index=False)
            ],
        }
    summary["recall_gap"] = None
    before = _latest_recall_gaps(con, cohort, "candidate")
    if not before.empty:
        cand = latest_verdicts(con, cohort, "candidate")
        failing = cand[(cand["rule"] == "recall_gap") & (cand["verdict"] == "fail")]
        if not failing.empty:
            pick = failing.loc[failing["estimate"].idxmin()]  # the group doing worst
        else:
            judged = cand[(cand["rule"] == "recall_gap") & (cand["verdict"] != "insufficient_evidence")]
            pool = judged if not judged.empty else cand[cand["rule"] == "recall_gap"]
            # the most harmful gap: lowest recall relative to the reference (the rule is one-sided)
            pick = pool.loc[pool["estimate"].idxmin()] if not pool.empty and pool["estimate"].notna().any() else None
        if pick is not None:
            row = before[(before["slice"] == pick["slice"]) & (before["group"] == pick["group"])].iloc[0]
            gap = {"slice": row["slice"], "group": row["group"], "reference": row["reference_group"],
                   "before": {"estimate": _round(row["estimate"]), "ci": [_round(row["lower"]), _round(row["upper"])]},
                   "after": None}
            after = _latest_recall_gaps(con, cohort, "mitigated")
            if not after.empty:
                match = after[(after["slice"] == pick["slice"]) & (after["group"] == pick["group"])]
                if not match.empty:
                    a = match.iloc[0]
                    gap["after"] = {"estimate": _round(a["estimate"]), "ci": [_round(a["lower"]), _round(a["upper"])],
                                    "model": f"{a['model_name']} v{a['model_version']}"}
            summary["recall_gap"] = gap
    try:
        from clinical_mlops.monitoring import incidents

        summary["open_incidents"] = incidents.count_open(con, cohort)
    except Exception:  # the incident table may not exist yet
        summary["open_incidents"] = 0
    return json.loads(json.dumps(summary, default=str))

"""The audit: group metrics, disparities against the reference, significance, verdicts."""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.core import bootstrap
from clinical_mlops.core.multiple_testing import adjust_p_values
from clinical_mlops.fairness.audit._group_metrics import (
    DISPARITY_METRICS,
    EXACT_MAX_ROWS,
    GROUP_METRICS,
    SliceMetrics,
    disparities,
    slice_metrics,
)
from clinical_mlops.fairness.audit._slices import MISSING_GROUP, Slice, slices, slices_from_codes
from clinical_mlops.fairness.audit._power import min_detectable_gap
from clinical_mlops.fairness.audit._statistics import two_proportion_z_test
from clinical_mlops.fairness.audit._store import store_audit
from clinical_mlops.fairness.audit._verdicts import FairnessAudit, verdict_for
from clinical_mlops.governance.policy import FairnessPolicy, Policy

__all__ = ["audit", "audit_arrays", "audit_model"]

_GROUP_COLUMNS = ["slice", "group", "is_reference", "n", "n_positive", "metric", "estimate", "lower", "upper"]
_DISPARITY_COLUMNS = ["slice", "group", "reference", "n", "n_positive", "reference_n", "metric", "kind", "estimate",
                      "lower", "upper", "p_value", "reference_n_positive", "required", "min_detectable_gap"]
_VERDICT_COLUMNS = ["slice", "group", "reference", "n", "rule", "severity", "blocking", "bound", "kind", "estimate",
                    "lower", "upper", "p_adjusted", "verdict", "reason", "n_positive", "reference_n",
                    "reference_n_positive", "required", "min_detectable_gap"]
_NAN = float("nan")


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
    score_bins: int = bootstrap.DEFAULT_BINS,
) -> FairnessAudit:
    """Audit held-out predictions (``frame``: label, score and sensitive attribute columns)."""
    if frame.empty:
        raise ValueError("cannot audit an empty set of predictions")
    y = frame[label_column].to_numpy(dtype=float)
    s = frame[score_column].to_numpy(dtype=float)
    return audit_arrays(y, s, slices(frame, policy), threshold=threshold, policy=policy, n_bootstrap=n_bootstrap,
                        seed=seed, exact_max_rows=exact_max_rows, score_bins=score_bins)


def _required(sl: Slice, result: SliceMetrics, fp: FairnessPolicy, n_rows: int) -> frozenset[str]:
    """The slice's groups that must be assessed: an attribute's listed groups and those at or above the
    policy's population share of the audited rows; an intersection's none (see the policy)."""
    if len(sl.attributes) != 1:
        return frozenset()
    shares = {label: float(result.n[g]) / n_rows for g, label in enumerate(sl.labels)}
    return fp.required_groups(sl.name, shares)


def _unassessed(sl: Slice, groups: list[tuple[str, int, int]], required: frozenset[str], reason: str) -> list[tuple]:
    """Disparity-shaped rows (no estimate) of groups that cannot be compared with their reference."""
    return [(sl.name, label, sl.reference, n, npos, 0, metric, kind, _NAN, _NAN, _NAN, _NAN, 0, label in required,
             _NAN, reason) for label, n, npos in groups for metric, (kind, _) in DISPARITY_METRICS.items()]


def _slice_rows(sl: Slice, result: SliceMetrics, fp: FairnessPolicy,
                n_rows: int) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Group rows, disparity rows (with the recall-gap p-values and, for required groups, the minimum
    detectable recall gap) and rows of groups that cannot be assessed, of one slice."""
    est, rep = result.estimate, result.replicates
    lo, hi = bootstrap.percentile_interval(rep, fp.confidence)
    group_rows = [(sl.name, label, label == sl.reference, int(result.n[g]), int(result.n_positive[g]), metric,
                   est[g, m], lo[g, m], hi[g, m])
                  for g, label in enumerate(sl.labels) for m, metric in enumerate(GROUP_METRICS)]
    required = _required(sl, result, fp, n_rows)
    absent = [(label, 0, 0) for label in sorted(required - set(sl.labels))]
    unassessed = _unassessed(sl, absent, required, "required group absent from the data")
    if sl.reference not in sl.labels:
        present = [(label, int(result.n[g]), int(result.n_positive[g])) for g, label in enumerate(sl.labels)]
        unassessed += _unassessed(sl, present, required, f"reference group {sl.reference} absent from the data")
        return group_rows, [], unassessed
    ref = sl.labels.index(sl.reference)
    d_est = disparities(est[None], ref)
    d_rep = disparities(rep, ref) if rep.shape[0] else {k: np.empty((0, len(sl.labels))) for k in d_est}
    ref_n, ref_pos = int(result.n[ref]), int(result.n_positive[ref])
    ref_tp = est[ref, 2] * ref_pos if ref_pos else 0.0
    disparity_rows = []
    for g, label in enumerate(sl.labels):
        if g == ref:
            continue
        ng, npos = int(result.n[g]), int(result.n_positive[g])
        p_value = float("nan")
        if ng >= fp.min_group_size and ref_n >= fp.min_group_size and npos > 0 and ref_pos > 0:
            p_value = two_proportion_z_test(est[g, 2] * npos, npos, ref_tp, ref_pos)
        is_required = label in required
        mdg = min_detectable_gap(npos, ref_pos, float(est[ref, 2]), alpha=fp.significance.alpha) if is_required else None
        for metric, (kind, _) in DISPARITY_METRICS.items():
            dlo, dhi = bootstrap.percentile_interval(d_rep[metric][:, g : g + 1], fp.confidence)
            disparity_rows.append((sl.name, label, sl.reference, ng, npos, ref_n, metric, kind,
                                   float(d_est[metric][0, g]), float(dlo[0]), float(dhi[0]),
                                   p_value if metric == "recall_gap" else float("nan"), ref_pos, is_required,
                                   _NAN if mdg is None else mdg))
    return group_rows, disparity_rows, unassessed


def _verdicts(disparity_table: pd.DataFrame, unassessed: pd.DataFrame, fp: FairnessPolicy) -> pd.DataFrame:
    rows = []
    for rule in fp.metrics:
        for r in disparity_table[disparity_table["metric"] == rule.name].itertuples(index=False):
            verdict, reason = verdict_for(rule, rule.name, r.estimate, r.lower, r.upper, int(r.n), int(r.reference_n),
                                          fp.min_group_size)
            rows.append((r.slice, r.group, r.reference, int(r.n), rule.name, rule.severity, rule.blocking,
                         rule.bound, rule.kind, r.estimate, r.lower, r.upper, r.p_adjusted, verdict, reason,
                         int(r.n_positive), int(r.reference_n), int(r.reference_n_positive), bool(r.required),
                         r.min_detectable_gap))
        for r in unassessed[unassessed["metric"] == rule.name].itertuples(index=False):
            rows.append((r.slice, r.group, r.reference, int(r.n), rule.name, rule.severity, rule.blocking,
                         rule.bound, rule.kind, _NAN, _NAN, _NAN, _NAN, "insufficient_evidence", r.reason,
                         int(r.n_positive), 0, 0, bool(r.required), _NAN))
    return pd.DataFrame(rows, columns=_VERDICT_COLUMNS)


def _absent_attributes(slices: list[Slice], fp: FairnessPolicy) -> list[tuple]:
    """Rows for the listed required groups of sensitive attributes the data does not have at all."""
    present = {sl.name for sl in slices}
    rows = []
    for attr in fp.sensitive_attributes:
        if attr.name in present or not attr.required_groups:
            continue
        ghost = Slice(attr.name, (attr.name,), attr.reference, [], np.empty(0, dtype=np.int64))
        rows += _unassessed(ghost, [(g, 0, 0) for g in attr.required_groups], frozenset(attr.required_groups),
                            f"attribute {attr.name} absent from the data")
    return rows


def audit_arrays(
    y: np.ndarray,
    s: np.ndarray,
    slices: list[Slice],
    *,
    threshold: float,
    policy: Policy,
    n_bootstrap: int | None = None,
    seed: int | None = None,
    exact_max_rows: int = EXACT_MAX_ROWS,
    score_bins: int = bootstrap.DEFAULT_BINS,
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

    method = bootstrap.method_for(n, exact_max_rows)
    results = slice_metrics(y, s, slices, threshold=threshold, n_boot=n_boot, seed=seed,
                            exact_max_rows=exact_max_rows, score_bins=score_bins)
    group_rows, disparity_rows, unassessed_rows = [], [], []
    for sl, result in zip(slices, results):
        g_rows, d_rows, u_rows = _slice_rows(sl, result, fp, n)
        group_rows += g_rows
        disparity_rows += d_rows
        unassessed_rows += u_rows
    unassessed_rows += _absent_attributes(slices, fp)
    groups = pd.DataFrame(group_rows, columns=_GROUP_COLUMNS)
    disparity_table = pd.DataFrame(disparity_rows, columns=_DISPARITY_COLUMNS)
    unassessed = pd.DataFrame(unassessed_rows, columns=[*_DISPARITY_COLUMNS, "reason"])
    recall = disparity_table["metric"] == "recall_gap"
    disparity_table["p_adjusted"] = np.nan
    if recall.any():
        disparity_table.loc[recall, "p_adjusted"] = adjust_p_values(
            disparity_table.loc[recall, "p_value"].to_numpy(), fp.significance.correction
        )
    disparity_table["significant"] = disparity_table["p_adjusted"] < fp.significance.alpha
    return FairnessAudit(
        groups=groups, disparities=disparity_table, verdicts=_verdicts(disparity_table, unassessed, fp),
        threshold=float(threshold), n=n, n_positive=int(y.sum()), policy_sha256=policy.sha256,
        policy_version=policy.version, confidence=fp.confidence, n_bootstrap=n_boot, seed=seed,
        correction=fp.significance.correction, rules=fp.metrics, bootstrap_method=method,
        score_bins=score_bins if method == "binned" else None, exact_max_rows=int(exact_max_rows),
    )


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
    score_bins: int = bootstrap.DEFAULT_BINS,
) -> tuple[FairnessAudit, str | None]:
    """Audit one registered model version (a ``ml.model_versions`` row) and store the result.

    The test predictions are fetched as numbers (labels, scores, group codes): no frame of rows.
    """
    attributes = list(dict.fromkeys(policy.fairness.attribute_names))
    cols = ", ".join(f"f.{a}" for a in attributes)
    source = (f"SELECT p.encounter_id, p.label, p.score, {cols} FROM ml.predictions p "
              f"JOIN {features_table} f USING (encounter_id) "
              "WHERE p.model_name = ? AND p.model_version = ? AND p.split = 'test'")
    y, s, coded = bootstrap.coded_predictions(con, source, [str(model["model_name"]), str(model["model_version"])],
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

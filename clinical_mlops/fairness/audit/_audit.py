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
from clinical_mlops.fairness.audit._statistics import two_proportion_z_test
from clinical_mlops.fairness.audit._store import store_audit
from clinical_mlops.fairness.audit._verdicts import FairnessAudit, verdict_for
from clinical_mlops.governance.policy import FairnessPolicy, Policy

__all__ = ["audit", "audit_arrays", "audit_model"]

_GROUP_COLUMNS = ["slice", "group", "is_reference", "n", "n_positive", "metric", "estimate", "lower", "upper"]
_DISPARITY_COLUMNS = ["slice", "group", "reference", "n", "n_positive", "reference_n", "metric", "kind", "estimate",
                      "lower", "upper", "p_value"]
_VERDICT_COLUMNS = ["slice", "group", "reference", "n", "rule", "severity", "blocking", "bound", "kind", "estimate",
                    "lower", "upper", "p_adjusted", "verdict", "reason"]


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


def _slice_rows(sl: Slice, result: SliceMetrics, fp: FairnessPolicy) -> tuple[list[tuple], list[tuple]]:
    """Group rows and disparity rows (with the recall-gap p-values) of one slice."""
    est, rep = result.estimate, result.replicates
    lo, hi = bootstrap.percentile_interval(rep, fp.confidence)
    group_rows = [(sl.name, label, label == sl.reference, int(result.n[g]), int(result.n_positive[g]), metric,
                   est[g, m], lo[g, m], hi[g, m])
                  for g, label in enumerate(sl.labels) for m, metric in enumerate(GROUP_METRICS)]
    if sl.reference not in sl.labels:
        return group_rows, []
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
        for metric, (kind, _) in DISPARITY_METRICS.items():
            dlo, dhi = bootstrap.percentile_interval(d_rep[metric][:, g : g + 1], fp.confidence)
            disparity_rows.append((sl.name, label, sl.reference, ng, npos, ref_n, metric, kind,
                                   float(d_est[metric][0, g]), float(dlo[0]), float(dhi[0]),
                                   p_value if metric == "recall_gap" else float("nan")))
    return group_rows, disparity_rows


def _verdicts(disparity_table: pd.DataFrame, fp: FairnessPolicy) -> pd.DataFrame:
    rows = []
    for rule in fp.metrics:
        for r in disparity_table[disparity_table["metric"] == rule.name].itertuples(index=False):
            verdict, reason = verdict_for(rule, rule.name, r.estimate, r.lower, r.upper, int(r.n), int(r.reference_n),
                                          fp.min_group_size)
            rows.append((r.slice, r.group, r.reference, int(r.n), rule.name, rule.severity, rule.blocking,
                         rule.bound, rule.kind, r.estimate, r.lower, r.upper, r.p_adjusted, verdict, reason))
    return pd.DataFrame(rows, columns=_VERDICT_COLUMNS)


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
    group_rows, disparity_rows = [], []
    for sl, result in zip(slices, results):
        g_rows, d_rows = _slice_rows(sl, result, fp)
        group_rows += g_rows
        disparity_rows += d_rows
    groups = pd.DataFrame(group_rows, columns=_GROUP_COLUMNS)
    disparity_table = pd.DataFrame(disparity_rows, columns=_DISPARITY_COLUMNS)
    recall = disparity_table["metric"] == "recall_gap"
    disparity_table["p_adjusted"] = np.nan
    if recall.any():
        disparity_table.loc[recall, "p_adjusted"] = adjust_p_values(
            disparity_table.loc[recall, "p_value"].to_numpy(), fp.significance.correction
        )
    disparity_table["significant"] = disparity_table["p_adjusted"] < fp.significance.alpha
    return FairnessAudit(
        groups=groups, disparities=disparity_table, verdicts=_verdicts(disparity_table, fp),
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

"""Realised metrics of a window once its labels are joined, with bootstrap intervals and verdicts.

The labelled rows of a window are evaluated like the held-out split: AUROC, recall and precision at
the window's operating threshold, ECE (the evaluation tables' equal-width bins), calibration-in-the-
large, Brier and selection rate, overall, per group and per intersection, each with its bootstrap
interval (:func:`clinical_mlops.evaluation.metrics.metrics_by_group`, the policy's replicates, seed,
confidence and minimum group size: a smaller group has no interval).

Fairness verdicts are the offline gate's own (:func:`clinical_mlops.fairness.audit.audit`): per group
and rule, the interval wholly outside the bound fails, wholly inside passes, anything else (a small
group, an interval that straddles) is insufficient evidence. A window with no labelled row has no
realised figure at all — never a pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clinical_mlops.evaluation.metrics import metrics_by_group
from clinical_mlops.fairness import audit as fairness
from clinical_mlops.monitoring.estimation._slices import group_columns

__all__ = ["REALISED_COLUMNS", "REALISED_METRICS", "realised_metrics"]

REALISED_METRICS = {"auroc": "auroc", "tpr": "recall", "precision": "precision", "ece": "ece",
                    "calibration_in_the_large": "calibration_in_the_large", "brier": "brier",
                    "selection_rate": "selection_rate"}
"""metrics_by_group's names -> the names the window tables use."""
REALISED_COLUMNS = ["attribute", "group", "n", "metric", "estimate", "lower", "upper", "status", "reason"]
_FAIRNESS_RULES = ("recall_gap", "demographic_parity_ratio")


def realised_metrics(labelled: pd.DataFrame, policy, *, threshold: float, n_boot: int | None = None,
                     seed: int | None = None) -> pd.DataFrame:
    """Realised metrics and fairness verdicts of labelled rows (``label``, ``score``, attributes), one row per
    (attribute, group, metric) in :data:`REALISED_COLUMNS`; empty when there is no labelled row."""
    if labelled.empty:
        return pd.DataFrame(columns=REALISED_COLUMNS)
    fp = policy.fairness
    n_boot = int(n_boot or fp.n_bootstrap)
    seed = fp.bootstrap_seed if seed is None else seed
    y = labelled["label"].to_numpy(dtype=float)
    s = labelled["score"].to_numpy(dtype=float)
    table = metrics_by_group(y, s, group_columns(labelled, policy), threshold=threshold, n_boot=n_boot, seed=seed,
                             min_group_size=fp.min_group_size, confidence=fp.confidence)
    table = table[table["metric"].isin(list(REALISED_METRICS))].copy()
    table["metric"] = table["metric"].map(REALISED_METRICS)
    small = table["n"] < fp.min_group_size
    table["status"] = np.where(small, "insufficient_evidence", "realised")
    table["reason"] = np.where(small, f"fewer than {fp.min_group_size} labelled rows: no interval",
                               "realised on the joined labels")
    rows = [table[REALISED_COLUMNS]]
    frame = labelled.assign(label=labelled["label"].astype(int))
    result = fairness.audit(frame, threshold=threshold, policy=policy, n_bootstrap=n_boot, seed=seed)
    verdicts = result.verdicts[result.verdicts["rule"].isin(_FAIRNESS_RULES)]
    if not verdicts.empty:
        rows.append(pd.DataFrame({
            "attribute": verdicts["slice"], "group": verdicts["group"], "n": verdicts["n"].astype("int64"),
            "metric": verdicts["rule"], "estimate": verdicts["estimate"], "lower": verdicts["lower"],
            "upper": verdicts["upper"], "status": verdicts["verdict"], "reason": verdicts["reason"],
        }))
    return pd.concat(rows, ignore_index=True).astype({"n": "int64"})

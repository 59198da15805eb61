"""Impact: both models on the same held-out rows, with paired bootstrap CIs from the project's one kernel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clinical_mlops.core import bootstrap

__all__ = ["LOWER_IS_BETTER", "PAIRED_METRICS", "PairedResult", "paired_bootstrap"]

PAIRED_METRICS: tuple[str, ...] = ("auroc", "auprc", "brier", "recall", "fpr", "alert_rate")
LOWER_IS_BETTER = frozenset({"brier", "fpr"})
_KERNEL = [bootstrap.METRICS.index(m) for m in ("auroc", "auprc", "brier", "tpr", "fpr", "selection_rate")]


@dataclass(frozen=True)
class PairedResult:
    """Point estimates and bootstrap replicates of both models' metrics, per subset."""

    table: pd.DataFrame
    replicates: dict[tuple[str, str], np.ndarray]  # (attribute, group) -> (n_boot, 2, n_metrics)


def paired_bootstrap(
    y: np.ndarray,
    scores: Sequence[np.ndarray],
    thresholds: Sequence[float],
    groups: Mapping[str, np.ndarray] | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    min_group_size: int = 100,
) -> PairedResult:
    """Metrics of one or two models on the same rows, with paired bootstrap CIs of the difference.

    ``scores``/``thresholds`` hold the champion first and the challenger second (or only the
    challenger). Each replicate draws multinomial row counts once (seeded) and evaluates every
    model on that same resample, overall and within each group; the delta's interval is the
    percentile interval of the per-replicate differences. Groups smaller than
    ``min_group_size`` get point estimates only. Table columns: attribute, group, n, n_positive,
    metric, champion, challenger, delta, lower, upper, challenger_lower, challenger_upper.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    if n == 0:
        raise ValueError("no rows to evaluate")
    models = [np.asarray(s, dtype=np.float64) for s in scores]
    if len(models) not in (1, 2) or len(thresholds) != len(models):
        raise ValueError("give one or two score arrays with one threshold each")
    subsets: list[tuple[str, str, np.ndarray]] = [("overall", "all", np.arange(n))]
    for attribute, values in (groups or {}).items():
        values = pd.Series(np.asarray(values, dtype=object)).fillna("missing").astype(str).to_numpy()
        for group in sorted(set(values)):
            subsets.append((attribute, group, np.flatnonzero(values == group)))
    prepared = [[bootstrap.subset(y, m, t, idx) for m, t in zip(models, thresholds)] for _, _, idx in subsets]
    points = [np.stack([bootstrap.point_estimates(p)[_KERNEL] for p in preps]) for preps in prepared]
    boot = [n_boot > 0 and idx.size >= min_group_size for _, _, idx in subsets]
    drawn = bootstrap.row_replicates(n, [p if use else None for preps, use in zip(prepared, boot) for p in preps],
                                     n_boot=n_boot, seed=seed)
    reps = {k: np.stack([drawn[k * len(models) + j][:, _KERNEL] for j in range(len(models))], axis=1)
            for k, use in enumerate(boot) if use}
    rows = []
    for k, (attribute, group, idx) in enumerate(subsets):
        est, n_pos = points[k], int(y[idx].sum())
        nan = np.full(len(PAIRED_METRICS), np.nan)
        c_lo, c_hi, lo, hi = nan, nan, nan, nan
        if k in reps:
            c_lo, c_hi = bootstrap.percentile_interval(reps[k][:, -1], confidence)
            if len(models) == 2:
                lo, hi = bootstrap.percentile_interval(reps[k][:, 1] - reps[k][:, 0], confidence)
        for m, metric in enumerate(PAIRED_METRICS):
            champion = float(est[0, m]) if len(models) == 2 else float("nan")
            challenger = float(est[-1, m])
            rows.append({
                "attribute": attribute, "group": group, "n": int(idx.size), "n_positive": n_pos,
                "metric": metric, "champion": champion, "challenger": challenger, "delta": challenger - champion,
                "lower": float(lo[m]), "upper": float(hi[m]),
                "challenger_lower": float(c_lo[m]), "challenger_upper": float(c_hi[m]),
            })
    replicates = {(subsets[k][0], subsets[k][1]): r for k, r in reps.items()}
    return PairedResult(pd.DataFrame(rows), replicates)

"""Fairness on labelled production predictions: the held-out audit's code, stored as ``model_role = 'production'``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from clinical_mlops.fairness import audit as fairness
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.monitoring.production._outcomes import labelled_predictions
from clinical_mlops.monitoring.production._performance import latest_threshold
from clinical_mlops.monitoring.production._tables import utc_now

__all__ = ["ProductionFairness", "production_fairness"]


@dataclass(frozen=True)
class ProductionFairness:
    model: tuple[str, str] | None
    n: int
    audit: object | None            # fairness.FairnessAudit
    audit_id: str | None
    reason: str = ""


def production_fairness(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    *,
    policy,
    window_days: float = 90.0,
    n_bootstrap: int | None = None,
    now: datetime | None = None,
    store: bool = True,
) -> ProductionFairness:
    """The policy's fairness audit on the current model's labelled production predictions."""
    now = now or utc_now()
    frame = labelled_predictions(con, spec.name, since=now - timedelta(days=window_days))
    if frame.empty:
        return ProductionFairness(None, 0, None, None, "no labelled production predictions in the window")
    last = frame.iloc[-1]
    model = (str(last["model_name"]), str(last["model_version"]))
    part = frame[(frame["model_name"] == model[0]) & (frame["model_version"] == model[1])].reset_index(drop=True)
    for attribute in policy.fairness.attribute_names:
        if attribute in part.columns:
            part[attribute] = part[attribute].fillna("Unknown")
    result = fairness.audit(part, threshold=latest_threshold(part), policy=policy, n_bootstrap=n_bootstrap)
    audit_id = None
    if store:
        audit_id = fairness.store_audit(con, result, cohort=spec.name, model_name=model[0], model_version=model[1],
                                        model_role="production", evaluated_at=now)
    return ProductionFairness(model, len(part), result, audit_id)

"""The trade-off table a reviewer chooses from: every method fitted, audited and tabulated against the
candidate, and the option to register."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from clinical_mlops.fairness import audit as fairness
from clinical_mlops.fairness.mitigation._fit import fit_mitigation
from clinical_mlops.fairness.mitigation._models import METHODS, MitigationResult
from clinical_mlops.training import modelling
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import Policy

__all__ = ["Comparison", "compare_mitigations"]


def _tradeoff_row(label: str, kind: str, needs: bool, y: np.ndarray, scores: np.ndarray, threshold: float,
                  audit: fairness.FairnessAudit, slice_name: str, group: str) -> dict:
    flagged = scores >= threshold
    gap = audit.disparity(slice_name, group, "recall_gap") or {"estimate": np.nan, "lower": np.nan, "upper": np.nan}
    judged = audit.verdicts[(audit.verdicts["rule"] == "recall_gap") & (audit.verdicts["verdict"] != "insufficient_evidence")]
    return {
        "method": label,
        "kind": kind,
        "needs_sensitive_attribute": needs,
        "auroc": float(roc_auc_score(y, scores)) if 0 < y.sum() < y.size else float("nan"),
        "recall": float(flagged[y == 1].mean()) if (y == 1).any() else float("nan"),
        "alerts_per_100": float(100 * flagged.mean()),
        "recall_gap": gap["estimate"],
        "recall_gap_lower": gap["lower"],
        "recall_gap_upper": gap["upper"],
        "max_abs_recall_gap": float(judged["estimate"].abs().max()) if not judged.empty else float("nan"),
        "fails": int((audit.verdicts["verdict"] == "fail").sum()),
        "blocking_fails": int(((audit.verdicts["verdict"] == "fail") & audit.verdicts["blocking"]).sum()),
    }


@dataclass
class Comparison:
    """The trade-off table and every fitted option; ``chosen`` is the one to register."""

    table: pd.DataFrame
    results: dict[str, MitigationResult]
    audits: dict[str, fairness.FairnessAudit]
    chosen: str | None
    reason: str


def compare_mitigations(
    *,
    base_model,
    base_test_scores: np.ndarray,
    train: pd.DataFrame,
    test: pd.DataFrame,
    spec: CohortSpec,
    policy: Policy,
    slice_name: str,
    group: str,
    operating_threshold: float,
    methods: Sequence[str] | None = None,
    n_bootstrap: int | None = None,
    seed: int = 7,
    eg_max_iter: int = 20,
) -> Comparison:
    """Fit each method and tabulate overall AUROC, recall and alerts against the recall gap.

    The option registered is the one with no blocking failure and an AUROC drop within
    ``change_control.acceptance.max_auroc_drop`` that leaves the smallest |recall gap| for the
    target group; if none qualifies, the one with the smallest gap (the reviewer sees why).
    """
    attributes = tuple(slice_name.split(fairness.INTERSECTION_SEPARATOR))
    methods = tuple(methods or policy.fairness.mitigation.methods)
    y = test["label"].to_numpy().astype(int)
    audit_cols = [a for a in policy.fairness.attribute_names if a in test.columns]
    base_frame = test[audit_cols].reset_index(drop=True).assign(label=y, score=base_test_scores)
    base_audit = fairness.audit(base_frame, threshold=operating_threshold, policy=policy, n_bootstrap=n_bootstrap)
    rows = [_tradeoff_row("none (candidate)", "—", False, y, base_test_scores, operating_threshold, base_audit,
                          slice_name, group)]
    results, audits = {}, {"none": base_audit}
    skipped: dict[str, str] = {}
    post = any(METHODS.get(m, {}).get("kind") == "post-processing" for m in methods)
    train_scores = modelling.predict_risk(base_model, train, spec) if post else None  # once for all of them
    for method in methods:
        try:
            result = fit_mitigation(method, base_model=base_model, train=train, test=test, spec=spec,
                                    attributes=attributes, operating_threshold=operating_threshold,
                                    constraint=policy.fairness.mitigation.constraint, seed=seed,
                                    eg_max_iter=eg_max_iter, base_train_scores=train_scores,
                                    base_test_scores=base_test_scores)
        except ValueError as exc:  # e.g. a group with a single outcome class in training
            skipped[method] = f"not applicable here: {exc}"
            continue
        frame = test[audit_cols].reset_index(drop=True).assign(label=y, score=result.test_scores)
        result_audit = fairness.audit(frame, threshold=result.operating_threshold, policy=policy,
                                      n_bootstrap=n_bootstrap)
        results[method], audits[method] = result, result_audit
        rows.append(_tradeoff_row(method, result.kind, result.needs_sensitive_attribute, y, result.test_scores,
                                  result.operating_threshold, result_audit, slice_name, group))
    table = pd.DataFrame(rows)
    base_auroc = table.loc[0, "auroc"]
    candidates = table.iloc[1:].copy()
    candidates["auroc_drop"] = base_auroc - candidates["auroc"]
    max_drop = policy.change_control.acceptance.max_auroc_drop
    ok = candidates[(candidates["blocking_fails"] == 0) & (candidates["auroc_drop"] <= max_drop)]
    if not ok.empty:
        chosen = ok.loc[ok["recall_gap"].abs().idxmin(), "method"]
        reason = (f"no blocking failure, AUROC drop within {max_drop:g}, and the smallest |recall gap| "
                  f"for {group}")
    elif not candidates.empty:
        chosen = candidates.loc[candidates["recall_gap"].abs().idxmin(), "method"]
        reason = (f"no option met every acceptance criterion; registered the smallest |recall gap| for {group} "
                  "for review")
    else:
        chosen, reason = None, "no mitigation method configured"
    table["auroc_change"] = table["auroc"] - base_auroc
    table["chosen"] = table["method"] == chosen
    if skipped:
        reason += "; " + "; ".join(f"{m} {why}" for m, why in skipped.items())
    return Comparison(table=table, results=results, audits=audits, chosen=chosen, reason=reason)

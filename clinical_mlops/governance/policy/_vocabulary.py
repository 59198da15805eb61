"""The words a policy may use: severities, owner roles, corrections, fairness metrics, mitigations."""

from __future__ import annotations

from clinical_mlops.core.multiple_testing import CORRECTION_METHODS

__all__ = [
    "BLOCKING_SEVERITIES",
    "CORRECTIONS",
    "DIFFERENCE_METRICS",
    "KNOWN_METRICS",
    "MITIGATION_CONSTRAINTS",
    "MITIGATION_METHODS",
    "OWNER_ROLES",
    "RATIO_METRICS",
    "SEVERITIES",
    "TOP_LEVEL_SECTIONS",
]

SEVERITIES: tuple[str, ...] = ("warn", "block_promotion", "open_incident")
"""Severities in increasing order of consequence."""

BLOCKING_SEVERITIES: frozenset[str] = frozenset({"block_promotion", "open_incident"})
OWNER_ROLES: tuple[str, ...] = ("model_owner", "clinical_lead", "data_protection", "governance_board")
CORRECTIONS: tuple[str, ...] = CORRECTION_METHODS
"""Multiple-comparison corrections (those :mod:`clinical_mlops.core.multiple_testing` computes)."""

# Fairness metrics the code knows how to compute, and the kind of bound each takes.
DIFFERENCE_METRICS: frozenset[str] = frozenset(
    {
        "recall_gap",
        "fpr_gap",
        "precision_gap",
        "auroc_gap",
        "equalized_odds_difference",
        "demographic_parity_difference",
        "calibration_gap",
    }
)
RATIO_METRICS: frozenset[str] = frozenset({"demographic_parity_ratio", "recall_ratio"})
KNOWN_METRICS: frozenset[str] = DIFFERENCE_METRICS | RATIO_METRICS
MITIGATION_METHODS: frozenset[str] = frozenset({"group_thresholds", "threshold_optimizer", "exponentiated_gradient"})
MITIGATION_CONSTRAINTS: frozenset[str] = frozenset(
    {"true_positive_rate_parity", "equalized_odds", "demographic_parity", "false_positive_rate_parity"}
)
TOP_LEVEL_SECTIONS: tuple[str, ...] = ("version", "owners", "escalation", "fairness", "drift", "change_control",
                                      "monitoring")

"""The evaluation's defaults and names as plain values (no numpy, pandas or scikit-learn).

:class:`EvaluationSettings` is the one place the evaluation's defaults are defined; :mod:`.steps`
re-exports it and the Dagster config reads its defaults from here when the Definitions load.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXACT_MAX_ROWS", "EXTERNAL_CHECK", "EvaluationSettings", "HEADLINE_METRICS", "ROLES"]

ROLES = ("baseline", "candidate")
HEADLINE_METRICS = ("auroc", "auprc", "brier", "ece")

EXACT_MAX_ROWS = 250_000
"""Above this many rows the bootstrap is binned (cell counts); see :mod:`clinical_mlops.core.bootstrap`."""

EXTERNAL_CHECK = "external_performance_assessed"
"""The check of ``[cohort, external_evaluation]``."""


@dataclass(frozen=True)
class EvaluationSettings:
    n_bootstrap: int = 200
    seed: int = 11
    min_group_size: int = 100
    """Groups smaller than this get point estimates but no confidence interval."""
    exact_max_rows: int = EXACT_MAX_ROWS
    """Above this many test rows the bootstrap draws cell counts (score bins) instead of row weights."""

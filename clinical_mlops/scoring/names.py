"""Which registered models may serve a cohort, as plain names (no pandas or scikit-learn): the
Definitions read them when they load; :mod:`.champion` re-exports them."""

from __future__ import annotations

from clinical_mlops.training.params import registered_model_name

__all__ = ["CHAMPION_ROLES", "champion_model_names"]

CHAMPION_ROLES = ("candidate", "mitigated")
"""Roles whose registered model may hold a cohort's ``champion`` alias."""


def champion_model_names(cohort: str) -> tuple[str, ...]:
    """Every registered model whose ``champion`` alias may serve the cohort (candidate, mitigated)."""
    return tuple(registered_model_name(cohort, role) for role in CHAMPION_ROLES)

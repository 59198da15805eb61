"""Model building helpers (clinical_mlops.training.modelling)."""

from __future__ import annotations

from clinical_mlops.training import modelling


def test_registered_model_name_is_cohort_and_role():
    assert modelling.registered_model_name("synthetic_diabetes130_readmission_30d", "candidate") == "synthetic_diabetes130_readmission_30d_candidate"

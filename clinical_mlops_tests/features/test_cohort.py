"""The cohort spec's declared prediction time (clinical_mlops.features.cohort): each shipped cohort declares when it
predicts and when every feature is complete, and a malformed declaration is refused naming the field.

How the model card reports it is in ``audit/test_model_card_facts.py``.
"""

from __future__ import annotations

import re

import pytest

from clinical_mlops.features.cohort import CohortSpecError, load_cohort, parse_cohort_spec


def test_each_cohort_declares_when_it_predicts_and_when_every_feature_is_complete():
    readmission, prolonged = load_cohort("synthetic_diabetes130_readmission_30d"), load_cohort("synthetic_diabetes130_prolonged_stay")
    for spec in (readmission, prolonged):
        declared = spec.prediction_time
        assert declared is not None and declared.statement
        assert all(declared.available_at(f) is not None for f in spec.features), spec.name
    assert readmission.prediction_time.at == "discharge" and readmission.prediction_time.late_features() == ()
    in_stay = {f for m, names in prolonged.prediction_time.features_available_at if m == "discharge" for f in names}
    assert {"num_lab_procedures", "num_medications", "number_diagnoses"} <= in_stay
    assert "time_in_hospital" not in prolonged.features  # the outcome is not a feature
    assert "before discharge" in prolonged.prediction_time.limitation


@pytest.mark.parametrize("block, message", [
    ("prediction_time: {at: noon, statement: x}", "prediction_time.at 'noon'"),
    ("prediction_time: {at: discharge}", "missing required field 'statement'"),
    ("prediction_time: {at: discharge, statement: x, features_available_at: {admission: [nope]}}", "not features"),
    ("prediction_time: {at: discharge, statement: x, features_available_at: {admission: [a], discharge: [a]}}",
     "at two moments"),
])
def test_a_malformed_prediction_time_is_refused_naming_the_field(block, message):
    base = ("name: toy\ntitle: Toy\ntarget: {column: y, sql: 'x = 1', definition: d, source: s}\n"
            "features: {numeric: [a, b]}\nsensitive_attributes: [race]\n")
    assert parse_cohort_spec(base).prediction_time is None
    with pytest.raises(CohortSpecError, match=re.escape(message)):
        parse_cohort_spec(base + block + "\n")

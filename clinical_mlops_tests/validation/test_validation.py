"""Validation: every failure collected, failing rows quarantined with reasons, counts reconcile."""

from __future__ import annotations

import pytest

from clinical_mlops.ingestion import deid, landing
from clinical_mlops.validation import rules as validation
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402
from clinical_mlops_tests.helpers import land

SYNTHETIC_SOURCE = synthetic_source()

KEY = b"test-key"



def test_clean_extract_is_all_valid_and_pseudonymised(con, workspace, small_encounters):
    extract = land(con, small_encounters.head(500), workspace.landing / "extract.csv")
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, extract, pseudonym_key=KEY)
    assert (outcome.rows_landed, outcome.rows_valid, outcome.rows_quarantined) == (500, 500, 0)
    keys = {k for (k,) in con.execute("SELECT DISTINCT patient_key FROM staging.synthetic_diabetes130").fetchall()}
    originals = set(small_encounters.head(500)["patient_nbr"])
    assert keys == {deid.pseudonymise(p, KEY) for p in originals}
    assert not keys & originals
    columns = [c for (c, *_) in con.execute("DESCRIBE staging.synthetic_diabetes130").fetchall()]
    assert "patient_nbr" not in columns


BREAKAGES = {
    "wrong type in a count": ("num_medications", "twelve", "num_medications:integer_in_1_120"),
    "out of range count": ("time_in_hospital", "99", "time_in_hospital:integer_in_1_14"),
    "out-of-vocabulary code": ("A1Cresult", ">9", "A1Cresult:in_vocabulary"),
    "unexpected label": ("readmitted", "MAYBE", "readmitted:in_vocabulary"),
    "bad ICD-9 code": ("diag_1", "XYZ", "diag_1:icd9_code"),
    "non-numeric encounter id": ("encounter_id", "A12", "encounter_id:positive_integer"),
}


@pytest.mark.parametrize("kind", sorted(BREAKAGES))
def test_broken_rows_are_quarantined_with_the_failed_check(con, workspace, small_encounters, kind):
    column, value, reason = BREAKAGES[kind]
    frame = small_encounters.head(200).copy()
    frame.loc[3, column] = value
    frame.loc[17, column] = value + "0"  # distinct, so only the intended check fails
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, land(con, frame, workspace.landing / "extract.csv"), pseudonym_key=KEY)
    assert outcome.rows_quarantined == 2 and outcome.rows_valid == 198 and outcome.reconciles
    assert outcome.failures == {reason: 2}
    rows = con.execute("SELECT row_number, reasons FROM staging.synthetic_diabetes130__quarantine ORDER BY row_number").fetchall()
    assert rows == [(4, reason), (18, reason)]
    assert value not in str(rows)


def test_a_row_failing_several_checks_lists_them_all(con, workspace, small_encounters):
    frame = small_encounters.head(50).copy()
    frame.loc[0, ["A1Cresult", "num_procedures"]] = [">9", "-1"]
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, land(con, frame, workspace.landing / "extract.csv"), pseudonym_key=KEY)
    assert outcome.rows_quarantined == 1
    (reasons,) = con.execute("SELECT reasons FROM staging.synthetic_diabetes130__quarantine").fetchone()
    assert reasons == "A1Cresult:in_vocabulary; num_procedures:integer_in_0_10"


def test_duplicate_encounter_ids_are_quarantined_within_and_across_extracts(con, workspace, small_encounters):
    first = small_encounters.iloc[:100]
    second = small_encounters.iloc[100:200].copy()
    second.iloc[0, 0] = first.iloc[10, 0]  # clashes with the first extract
    second.iloc[2, 0] = second.iloc[1, 0]  # clashes within the second extract
    validation.validate_extract(con, SYNTHETIC_SOURCE, land(con, first, workspace.landing / "a.csv"), pseudonym_key=KEY)
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, land(con, second, workspace.landing / "b.csv"), pseudonym_key=KEY)
    assert outcome.failures == {"encounter_id:duplicate_across_extracts": 1, "encounter_id:duplicate_encounter_id": 2}
    assert outcome.rows_quarantined == 3 and outcome.reconciles


def test_truncated_row_is_quarantined_not_dropped(con, workspace, small_encounters):
    text = small_encounters.head(20).to_csv(index=False, lineterminator="\n")
    path = workspace.landing / "truncated.csv"
    path.write_text(text[: text.rstrip("\n").rfind(",", 0, len(text) - 40)])
    landing.land_extract(con, path, SYNTHETIC_SOURCE)
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, "truncated.csv", pseudonym_key=KEY)
    assert (outcome.rows_landed, outcome.rows_valid, outcome.rows_quarantined) == (20, 19, 1)
    assert "readmitted:not_nullable" in outcome.failures


def test_revalidation_replaces_rather_than_duplicates(con, workspace, small_encounters):
    frame = small_encounters.head(100).copy()
    frame.loc[5, "gender"] = "X"
    extract = land(con, frame, workspace.landing / "extract.csv")
    for _ in range(2):
        outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, extract, pseudonym_key=KEY)
    assert con.execute("SELECT count(*) FROM staging.synthetic_diabetes130").fetchone()[0] == outcome.rows_valid == 99
    assert con.execute("SELECT count(*) FROM staging.synthetic_diabetes130__quarantine").fetchone()[0] == 1


def test_unlanded_extract_is_a_clear_error(con):
    with pytest.raises(ValueError, match="no landed rows"):
        validation.validate_extract(con, SYNTHETIC_SOURCE, "never.csv", pseudonym_key=KEY)

"""Tests for clinical_mlops.ingestion.uci: the loader for the real UCI Diabetes 130 release."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from clinical_mlops.ingestion import diabetes130, uci

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "diabetes130"
RELEASE_ZIP = DATA_DIR / "dataset_diabetes.zip"
N_ENCOUNTERS = 101_766


def _require_release() -> Path:
    if not RELEASE_ZIP.is_file():
        pytest.skip(f"UCI release not found at {RELEASE_ZIP}")
    return RELEASE_ZIP


@pytest.fixture(scope="module")
def release_zip() -> Path:
    return _require_release()


@pytest.fixture(scope="module")
def unzipped(release_zip, tmp_path_factory) -> Path:
    """The release unpacked as distributed: <root>/dataset_diabetes/{diabetic_data,IDs_mapping}.csv."""
    root = tmp_path_factory.mktemp("uci")
    with zipfile.ZipFile(release_zip) as zf:
        zf.extractall(root)
    return root / "dataset_diabetes"


@pytest.fixture(scope="module")
def encounters(release_zip) -> pd.DataFrame:
    return uci.load_uci_encounters(release_zip)


# --------------------------------------------------------------------------------------
# Small synthetic files (no real data needed)
# --------------------------------------------------------------------------------------


def _row(encounter_id: int, patient: int, readmitted: str = "NO") -> list[str]:
    values = {c: "No" for c in diabetes130.COLUMNS}
    values.update(
        encounter_id=str(encounter_id), patient_nbr=str(patient), race="?", gender="Female",
        age="[70-80)", weight="?", admission_type_id="1", discharge_disposition_id="1",
        admission_source_id="7", time_in_hospital="3", payer_code="?", medical_specialty="?",
        num_lab_procedures="41", num_procedures="0", num_medications="12",
        number_outpatient="0", number_emergency="0", number_inpatient="0", diag_1="250.83",
        diag_2="V57", diag_3="?", number_diagnoses="9", max_glu_serum="None",
        A1Cresult="None", change="No", diabetesMed="Yes", readmitted=readmitted,
    )
    return [values[c] for c in diabetes130.COLUMNS]


def _write_csv(path: Path, header: list[str], rows: list[list[str]], newline: str = "\r\n") -> Path:
    path.write_bytes(newline.join(",".join(r) for r in [header, *rows]).encode() + newline.encode())
    return path


def test_small_crlf_csv_round_trip(tmp_path):
    rows = [_row(2278392, 8222157, "<30"), _row(149190, 55629189, ">30")]
    path = _write_csv(tmp_path / "diabetic_data.csv", list(diabetes130.COLUMNS), rows)
    frame = uci.load_uci_encounters(path)
    assert list(frame.columns) == list(diabetes130.COLUMNS)
    assert frame.values.tolist() == rows  # exactly as in the file, no "\r", no NaN
    assert frame["max_glu_serum"].tolist() == ["None", "None"]
    assert (frame.dtypes == object).all()


def test_columns_are_reordered_to_the_release_order(tmp_path):
    order = list(reversed(diabetes130.COLUMNS))
    row = _row(1, 2)
    path = _write_csv(tmp_path / "x.csv", order, [list(reversed(row))], newline="\n")
    frame = uci.load_uci_encounters(path)
    assert list(frame.columns) == list(diabetes130.COLUMNS)
    assert frame.iloc[0].tolist() == row


def test_missing_and_unexpected_columns_are_named(tmp_path):
    header = [c for c in diabetes130.COLUMNS if c != "A1Cresult"] + ["surprise"]
    row = _row(1, 2)
    path = _write_csv(tmp_path / "bad.csv", header, [row])
    with pytest.raises(ValueError, match="A1Cresult") as info:
        uci.load_uci_encounters(path)
    assert "missing" in str(info.value) and "surprise" in str(info.value)


def test_unrecognised_and_absent_sources(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="unrecognised"):
        uci.load_uci_encounters(other)
    with pytest.raises(FileNotFoundError):
        uci.load_uci_encounters(tmp_path / "nope.zip")
    with pytest.raises(ValueError):  # the not-found error is also a ValueError
        uci.load_uci_encounters(tmp_path / "nope.zip")
    with pytest.raises(FileNotFoundError, match="diabetic_data.csv"):
        uci.load_uci_encounters(tmp_path)  # a directory without the CSV
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(FileNotFoundError, match="diabetic_data.csv"):
        uci.load_uci_encounters(empty_zip)


SMALL_MAPPING = (
    "admission_type_id,description\r\n1,Emergency\r\n5,Not Available\r\n6,NULL\r\n,\r\n"
    "discharge_disposition_id,description\r\n1,Discharged to home\r\n"
    '19,"Expired at home. Medicaid only, hospice."\r\n26,Unknown/Invalid\r\n,\r\n'
    "admission_source_id,description\r\n1, Physician Referral\r\n20, Not Mapped\r\n"
)


def test_small_id_mapping_parses(tmp_path):
    (tmp_path / "IDs_mapping.csv").write_bytes(SMALL_MAPPING.encode())
    maps = uci.load_id_mappings(tmp_path)
    assert list(maps) == ["admission_type_id", "discharge_disposition_id", "admission_source_id"]
    assert maps["admission_type_id"].to_dict("list") == {
        "id": [1, 5, 6], "description": ["Emergency", "Not Available", "NULL"],
        "is_unknown": [False, True, True],
    }
    assert maps["discharge_disposition_id"]["description"].tolist()[1] == (
        "Expired at home. Medicaid only, hospice."
    )
    assert maps["admission_source_id"].to_dict("list") == {
        "id": [1, 20], "description": ["Physician Referral", "Not Mapped"],
        "is_unknown": [False, True],
    }
    # Beside the encounter CSV, or the mapping file itself.
    csv = _write_csv(tmp_path / "diabetic_data.csv", list(diabetes130.COLUMNS), [_row(1, 2)])
    for source in (csv, tmp_path / "IDs_mapping.csv"):
        got = uci.load_id_mappings(source)
        for name, table in maps.items():
            pd.testing.assert_frame_equal(got[name], table)


def test_id_mapping_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDs_mapping.csv"):
        uci.load_id_mappings(tmp_path)
    csv = _write_csv(tmp_path / "diabetic_data.csv", list(diabetes130.COLUMNS), [_row(1, 2)])
    with pytest.raises(FileNotFoundError, match="IDs_mapping.csv"):
        uci.load_id_mappings(csv)
    (tmp_path / "IDs_mapping.csv").write_text("admission_type_id,description\n1,Emergency\n")
    with pytest.raises(ValueError, match="discharge_disposition_id"):
        uci.load_id_mappings(tmp_path)


def _synthetic_encounters(n: int) -> pd.DataFrame:
    # Ids of different digit counts in shuffled order: a string sort would be wrong.
    ids = [(i * 7919) % 1_000_003 + (10 if i % 3 else 100_000) for i in range(n)]
    rows = [_row(e, 1000 + i % 7) for i, e in enumerate(ids)]
    return pd.DataFrame(rows, columns=list(diabetes130.COLUMNS))


def test_write_sequential_extracts_small(tmp_path):
    frame = _synthetic_encounters(10)
    paths = uci.write_sequential_extracts(frame, tmp_path / "a", 3)
    assert [p.name for p in paths] == ["extract_000.csv", "extract_001.csv", "extract_002.csv"]
    parts = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths]
    assert [len(p) for p in parts] == [4, 3, 3]
    joined = pd.concat(parts, ignore_index=True)
    ids = joined["encounter_id"].astype(int).tolist()
    assert ids == sorted(int(e) for e in frame["encounter_id"])
    assert ids != sorted(ids, key=str)  # the ordering really is numeric
    expected = frame.assign(_k=frame["encounter_id"].astype(int)).sort_values("_k", kind="stable")
    pd.testing.assert_frame_equal(joined, expected.drop(columns="_k").reset_index(drop=True))
    for p in paths:
        raw = p.read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        assert raw.split(b"\n", 1)[0].decode() == ",".join(diabetes130.COLUMNS)

    # Deterministic: same bytes in another directory and when shuffled first.
    again = uci.write_sequential_extracts(frame.sample(frac=1, random_state=3), tmp_path / "b", 3)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]

    # A rerun with fewer extracts never deletes files already in the landing zone.
    (tmp_path / "a" / "keep.txt").write_text("x")
    fewer = uci.write_sequential_extracts(frame, tmp_path / "a", 2, prefix="extract")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "extract_000.csv", "extract_001.csv", "extract_002.csv", "keep.txt"
    ]
    assert sum(len(pd.read_csv(p)) for p in fewer) == 10


def test_write_sequential_extracts_ties_and_errors(tmp_path):
    frame = _synthetic_encounters(4)
    frame.loc[:, "encounter_id"] = ["5", "5", "3", "5"]
    frame.loc[:, "patient_nbr"] = ["a", "b", "c", "d"]
    paths = uci.write_sequential_extracts(frame, tmp_path, 4, prefix="month")
    assert [p.name for p in paths][-1] == "month_003.csv"
    order = [pd.read_csv(p, dtype=str)["patient_nbr"].item() for p in paths]
    assert order == ["c", "a", "b", "d"]  # stable among equal ids
    for bad in (0, -1, 5):
        with pytest.raises(ValueError):
            uci.write_sequential_extracts(frame, tmp_path, bad)
    with pytest.raises(ValueError):
        uci.write_sequential_extracts(frame, tmp_path, 2, prefix="../escape")


# --------------------------------------------------------------------------------------
# The real release
# --------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_loader_from_zip_directory_and_csv_are_identical(encounters, unzipped):
    # DataFrame.equals checks values, dtypes, columns and index (and is fast on 5M cells).
    from_dir = uci.load_uci_encounters(unzipped)
    assert from_dir.equals(encounters)
    from_csv = uci.load_uci_encounters(unzipped / "diabetic_data.csv")
    assert from_csv.equals(encounters)
    assert list(from_csv.columns) == list(encounters.columns) == list(diabetes130.COLUMNS)
    # The directory the zip was extracted into (holding dataset_diabetes/) works too.
    assert uci.load_uci_encounters(unzipped.parent).equals(encounters)


@pytest.mark.real_data
def test_release_shape_types_and_readme_counts(encounters):
    assert encounters.shape == (N_ENCOUNTERS, 50)
    assert list(encounters.columns) == list(diabetes130.COLUMNS)
    assert (encounters.dtypes == object).all()
    assert not encounters.isna().any().any()
    assert all(pd.api.types.infer_dtype(encounters[c], skipna=False) == "string" for c in encounters)
    assert not encounters["readmitted"].str.contains("\r").any()

    # "None" = not measured survives as a string.
    assert (encounters["max_glu_serum"] == "None").sum() > 90_000
    assert (encounters["A1Cresult"] == "None").sum() > 80_000

    assert encounters["readmitted"].value_counts().to_dict() == {
        "NO": 54_864, ">30": 35_545, "<30": 11_357
    }
    assert encounters["race"].value_counts().to_dict() == {
        "Caucasian": 76_099, "AfricanAmerican": 19_210, "?": 2_273, "Hispanic": 2_037,
        "Other": 1_506, "Asian": 641,
    }
    assert encounters["gender"].value_counts().to_dict() == {
        "Female": 54_708, "Male": 47_055, "Unknown/Invalid": 3
    }
    missing = {c: int((encounters[c] == diabetes130.MISSING).sum()) for c in diabetes130.NULLABLE_COLUMNS}
    assert missing == {
        "weight": 98_569, "medical_specialty": 49_949, "payer_code": 40_256, "race": 2_273,
        "diag_3": 1_423, "diag_2": 358, "diag_1": 21, "gender": 0,
    }
    assert encounters["patient_nbr"].nunique() == 71_518
    assert encounters["encounter_id"].is_unique
    dispositions = encounters["discharge_disposition_id"].astype(int)
    # The README's "1,652 ended in death or hospice" is the count of deaths only
    # (11, 19, 20, 21: expired); with hospice (13, 14) the six codes cover 2,423.
    assert dispositions.isin([11, 19, 20, 21]).sum() == 1_652
    assert dispositions.isin(diabetes130.DEATH_OR_HOSPICE_DISPOSITIONS).sum() == 2_423
    assert set(encounters["age"]) == set(diabetes130.AGE_BANDS)


@pytest.mark.real_data
def test_release_file_matches_readme_checksum(release_zip):
    with zipfile.ZipFile(release_zip) as zf:
        data = zf.read("dataset_diabetes/diabetic_data.csv")
    assert len(data) == 19_159_383
    assert hashlib.sha256(data).hexdigest() == (
        "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"
    )
    assert data.count(b"\r\n") == N_ENCOUNTERS + 1


@pytest.mark.real_data
def test_real_id_mappings(release_zip, unzipped):
    maps = uci.load_id_mappings(release_zip)
    assert {k: len(v) for k, v in maps.items()} == {
        "admission_type_id": 8, "discharge_disposition_id": 30, "admission_source_id": 25
    }
    for name, table in maps.items():
        assert list(table.columns) == ["id", "description", "is_unknown"]
        assert str(table["id"].dtype) == "int64" and table["id"].is_monotonic_increasing
        assert str(table["is_unknown"].dtype) == "bool"
        assert not table["description"].str.match(r"\s").any(), name
    assert set(maps["admission_type_id"]["id"]) == set(diabetes130.ADMISSION_TYPE_IDS)
    assert set(maps["discharge_disposition_id"]["id"]) == set(diabetes130.DISCHARGE_DISPOSITION_IDS)
    assert set(maps["admission_source_id"]["id"]) == set(diabetes130.ADMISSION_SOURCE_IDS) - {16}
    source = maps["admission_source_id"].set_index("id")
    assert source.loc[1, "description"] == "Physician Referral"  # leading space stripped
    assert source.loc[20, "description"] == "Not Mapped" and source.loc[20, "is_unknown"]
    assert maps["admission_type_id"].set_index("id").loc[6, "description"] == "NULL"
    assert maps["discharge_disposition_id"].set_index("id").loc[11, "description"] == "Expired"
    unknown = {k: sorted(v.loc[v["is_unknown"], "id"]) for k, v in maps.items()}
    assert unknown == {
        "admission_type_id": [5, 6, 8],
        "discharge_disposition_id": [18, 25, 26],
        "admission_source_id": [9, 15, 17, 20, 21],
    }
    # Same tables from the directory and from beside the CSV.
    for source_path in (unzipped, unzipped / "diabetic_data.csv"):
        got = uci.load_id_mappings(source_path)
        for name in maps:
            pd.testing.assert_frame_equal(got[name], maps[name])


@pytest.mark.real_data
def test_real_sequential_extracts(encounters, tmp_path):
    paths = uci.write_sequential_extracts(encounters, tmp_path, 12)
    assert [p.name for p in paths] == [f"extract_{i:03d}.csv" for i in range(12)]
    sizes = [p.read_bytes().count(b"\n") - 1 for p in paths]
    assert sum(sizes) == N_ENCOUNTERS and max(sizes) - min(sizes) <= 1
    first = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    last = pd.read_csv(paths[-1], dtype=str, keep_default_na=False)
    assert list(first.columns) == list(diabetes130.COLUMNS)
    assert first["encounter_id"].astype(int).max() < last["encounter_id"].astype(int).min()
    assert (first["max_glu_serum"] == "None").any()  # still a string after the round trip
    ordered = encounters["encounter_id"].astype(int).sort_values(kind="stable")
    assert first["encounter_id"].tolist() == ordered.iloc[: sizes[0]].astype(str).tolist()

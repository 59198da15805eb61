"""Tests for clinical_mlops.ingestion.deid: Safe Harbor identifier scan and keyed pseudonymisation."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from clinical_mlops.ingestion import deid, diabetes130
from clinical_mlops.core.warehouse import quote_identifier

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "diabetes130"
RELEASE_ZIP = DATA_DIR / "dataset_diabetes.zip"
DECLARED_ID_COLUMNS = {diabetes130.ENCOUNTER_ID, diabetes130.PATIENT_ID}


@pytest.fixture()
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def _make_table(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, list[str | None]]) -> None:
    """Create a VARCHAR table ``name`` holding ``columns`` (NULL for None)."""
    frame = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in columns.items()})
    con.register("_frame", frame)
    casts = ", ".join(f"CAST({quote_identifier(c)} AS VARCHAR) AS {quote_identifier(c)}" for c in columns)
    con.execute(f'CREATE TABLE "{name}" AS SELECT {casts} FROM _frame')
    con.unregister("_frame")


# Clean filler resembling the release: codes, counts, vocabulary values, missing markers.
FILLER = ["250.83", "V57", "E909", "?", "None", "Caucasian", "[70-80)", "Emergency/Trauma",
          "InternalMedicine", "Unknown/Invalid", "12", ">30", "Steady", "Family/GeneralPractice"]

PLANTED = {
    "ssn": ["123-45-6789", "SSN 987-65-4321 on file"],
    "email": ["jane.doe@example.org", "contact: j_smith+x@mail.hospital.co.uk"],
    "phone": ["(617) 555-0143", "617-555-0143", "call 617.555.0143 today", "+1 617 555 0143"],
    "full_date": ["2008-03-14", "03/14/2008", "14.03.2008", "3/14/08", "2008/3/4",
                  "March 14, 2008", "14 Mar 2008", "admitted 2008-03-14T10:00:00"],
    "zip5": ["02115", "02115-1234", " 90210 ", "Boston, MA 02115"],
    "url": ["https://example.org/patient/17", "www.example.com", "see HTTP://x.org"],
    "ip_address": ["192.168.1.254", "10.0.0.1", "from 172.16.254.3:8080"],
    "name": ["John Smith", "Mary-Jane O'Neil", "Smith, John", "John Q. Public", "Anna Maria Lopez-Garcia"],
    "mrn": ["MRN: 0012345", "mrn 998877", "Medical record number 445566"],
    "address": ["12 Main Street", "1600 Pennsylvania Ave"],
}


# --------------------------------------------------------------------------------------
# Value scan
# --------------------------------------------------------------------------------------


PLANTED_CASES = [(k, i, v) for k, vs in PLANTED.items() for i, v in enumerate(vs)]


@pytest.fixture(scope="module")
def planted_scan():
    """One table, one column per planted value (plus a clean column), scanned once."""
    connection = duckdb.connect()
    columns = {f"{kind}_{i}": FILLER + [value, value] for kind, i, value in PLANTED_CASES}
    columns["clean"] = FILLER + ["No", "Ch"]
    _make_table(connection, "planted", columns)
    findings = deid.scan_table_values(connection, "planted", columns=list(columns))
    connection.close()
    return findings


@pytest.mark.parametrize(("kind", "index", "value"), PLANTED_CASES)
def test_each_identifier_kind_is_detected_and_value_not_reported(planted_scan, kind, index, value):
    column = f"{kind}_{index}"
    mine = [f for f in planted_scan if f.column == column]
    assert deid.IdentifierFinding(column, kind, "values", 2) in mine, f"{kind} not detected: {mine}"
    # The finding names the column and the kind, never the value.
    assert value not in repr(planted_scan)
    assert value.strip() not in repr(planted_scan)


def test_planted_scan_leaves_clean_column_alone(planted_scan):
    assert not [f for f in planted_scan if f.column == "clean"]
    assert {f.identifier for f in planted_scan} == set(PLANTED)
    assert all(f.location == "values" and f.matches == 2 for f in planted_scan)


def test_one_kind_per_planted_value_except_documented_overlaps(planted_scan):
    by_column: dict[str, set[str]] = {}
    for f in planted_scan:
        by_column.setdefault(f.column, set()).add(f.identifier)
    overlaps = {c: kinds for c, kinds in by_column.items() if len(kinds) > 1}
    assert overlaps == {}, overlaps


def test_all_kinds_in_one_table_one_call(con):
    columns = {kind: FILLER + values for kind, values in PLANTED.items()}
    width = max(len(v) for v in columns.values())
    columns = {k: v + ["?"] * (width - len(v)) for k, v in columns.items()}
    _make_table(con, "mixed", columns)
    findings = deid.scan_table_values(con, "mixed", columns=list(columns))
    found = {(f.column, f.identifier) for f in findings}
    for kind in PLANTED:
        assert (kind, kind) in found, f"{kind} missing from {sorted(found)}"
    assert {f.identifier for f in findings} <= set(deid.IDENTIFIER_KINDS)
    text = repr(findings)
    assert not any(v in text for values in PLANTED.values() for v in values)


def test_findings_have_no_value_field():
    fields = set(deid.IdentifierFinding.__dataclass_fields__)
    assert fields == {"column", "identifier", "location", "matches"}
    with pytest.raises(AttributeError):
        deid.IdentifierFinding("c", "ssn", "values", 1).matches = 2  # type: ignore[misc]


def test_vocabulary_values_give_no_findings(con):
    columns: dict[str, list[str]] = {}
    for column, vocabulary in diabetes130.CATEGORICAL_VOCABULARIES.items():
        columns[column] = [*vocabulary, diabetes130.MISSING]
    columns["diag_1"] = ["250.83", "V57", "V45.81", "E909", "E878.1", "428", "?", "996.59"]
    columns["num_lab_procedures"] = ["1", "41", "132"]
    width = max(len(v) for v in columns.values())
    columns = {k: (v * width)[:width] for k, v in columns.items()}
    _make_table(con, "vocab", columns)
    assert deid.scan_table_values(con, "vocab", columns=list(columns)) == []


def test_every_vocabulary_value_fails_every_pattern(con):
    """The release's own codes never look like an identifier, in any column."""
    values = sorted({v for vocab in diabetes130.CATEGORICAL_VOCABULARIES.values() for v in vocab})
    _make_table(con, "voc", {"anything": values})
    assert deid.scan_table_values(con, "voc", columns=["anything"]) == []


def test_name_pattern_respects_the_column_vocabulary(con):
    _make_table(
        con,
        "spec",
        {
            "medical_specialty": ["Emergency/Trauma", "InternalMedicine", "John Smith", "?"],
            "free": ["Emergency/Trauma", "InternalMedicine", "Unknown/Invalid", "?"],
        },
    )
    findings = deid.scan_table_values(con, "spec", columns=["medical_specialty", "free"])
    assert findings == [deid.IdentifierFinding("medical_specialty", "name", "values", 1)]
    # A value that is in the declared vocabulary is never a name, even if it looks like one.
    vocab = {"medical_specialty": ("John Smith",)}
    assert deid.scan_table_values(con, "spec", columns=["medical_specialty"], vocabularies=vocab) == []


def test_typed_columns_dates_and_numbers(con):
    con.execute(
        "CREATE TABLE typed AS SELECT * FROM (VALUES "
        "(DATE '2008-03-14', TIMESTAMP '2008-03-14 10:00:00', 12345, 250.83, 3),"
        "(DATE '2008-03-15', NULL, 1, 428.0, 14),"
        "(NULL, TIMESTAMP '2009-01-01 00:00:00', 2, 1.5, 1)"
        ") t(admit_day, admit_ts, code5, diag_num, time_in_hospital)"
    )
    findings = deid.scan_table_values(
        con, "typed", columns=["admit_day", "admit_ts", "code5", "diag_num", "time_in_hospital"]
    )
    assert findings == [
        deid.IdentifierFinding("admit_day", "full_date", "values", 2),
        deid.IdentifierFinding("admit_ts", "full_date", "values", 2),
        deid.IdentifierFinding("code5", "zip5", "values", 1),
    ]


def test_exempt_columns_where_and_unknown_columns(con):
    _make_table(
        con,
        "enc",
        {
            "encounter_id": ["12522", "2278392", "149190"],
            "patient_nbr": ["48330783", "8222157", "55629189"],
            "notes": ["123-45-6789", "fine", "fine"],
            "part": ["a", "b", "b"],
        },
    )
    cols = ["encounter_id", "patient_nbr", "notes"]
    all_findings = deid.scan_table_values(con, "enc", columns=cols)
    assert ("encounter_id", "zip5") in {(f.column, f.identifier) for f in all_findings}
    exempted = deid.scan_table_values(con, "enc", columns=cols, exempt_columns=DECLARED_ID_COLUMNS)
    assert exempted == [deid.IdentifierFinding("notes", "ssn", "values", 1)]
    assert deid.scan_table_values(
        con, "enc", columns=cols, exempt_columns=DECLARED_ID_COLUMNS, where="part = 'b'"
    ) == []
    assert deid.scan_table_values(con, "enc", columns=["notes"], exempt_columns=["notes"]) == []
    with pytest.raises(ValueError, match="no_such_column"):
        deid.scan_table_values(con, "enc", columns=["notes", "no_such_column"])


def test_scan_accepts_odd_column_names_and_schema_tables(con):
    con.execute("CREATE SCHEMA raw")
    con.execute('CREATE TABLE raw.odd ("e-mail ""x""" VARCHAR, "plain" VARCHAR)')
    con.execute("INSERT INTO raw.odd VALUES ('a.b@example.org', 'x'), ('?', 'y')")
    assert deid.scan_table_values(con, "raw.odd", columns=['e-mail "x"', "plain"]) == [
        deid.IdentifierFinding('e-mail "x"', "email", "values", 1)
    ]
    # An empty table scans to nothing.
    con.execute("CREATE TABLE empty_t (a VARCHAR)")
    assert deid.scan_table_values(con, "empty_t", columns=["a"]) == []


# --------------------------------------------------------------------------------------
# Column-name scan
# --------------------------------------------------------------------------------------

PLANTED_COLUMN_NAMES = {
    "name": ["name", "first_name", "LastName", "surname", "patient_full_name"],
    "ssn": ["ssn", "social_security_number", "SocialSecurity"],
    "phone": ["phone", "telephone", "home_phone_number", "mobile"],
    "fax": ["fax", "fax_number"],
    "email": ["email", "e_mail", "EmailAddress"],
    "address": ["address", "street", "city", "zip", "zip_code", "postcode", "county"],
    "full_date": ["dob", "birth_date", "date_of_birth", "DateOfBirth", "admission_date",
                  "discharge_date", "death_date", "admitDate", "date"],
    "mrn": ["mrn", "medical_record_number", "MedicalRecordNo"],
    "health_plan_id": ["beneficiary_id", "member_id", "insurance_id"],
    "account": ["account", "account_number", "acct_no"],
    "license": ["license", "licence_number", "drivers_license"],
    "vehicle": ["vehicle_id", "vin", "license_plate"],
    "device_id": ["device_id", "serial_number", "device_serial", "imei"],
    "url": ["url", "website", "homepage_url"],
    "ip_address": ["ip", "ip_address", "client_ip"],
    "biometric": ["fingerprint", "voiceprint", "retina_scan"],
    "photo": ["photo", "face_photo", "photograph", "picture"],
    "other_id": ["passport_number", "national_id"],
}


@pytest.mark.parametrize(
    ("kind", "column"), [(k, c) for k, cols in PLANTED_COLUMN_NAMES.items() for c in cols]
)
def test_column_name_scan_flags_identifier_names(kind, column):
    assert deid.scan_column_names([column]) == [
        deid.IdentifierFinding(column, kind, "column_name", 0)
    ]


def test_column_name_scan_leaves_release_columns_alone():
    assert deid.scan_column_names(diabetes130.COLUMNS) == []
    # Derived columns a pipeline typically adds are not flagged either.
    derived = ["encounter_pseudonym", "patient_pseudonym", "key_fingerprint", "split",
               "label_lt30", "time_in_hospital_days", "age_band", "num_lab_procedures",
               "platelet_count", "cell_count", "icd9_chapter", "model_version"]
    assert deid.scan_column_names(derived) == []


def test_column_name_scan_mixed_list_keeps_order():
    cols = ["race", "first_name", "diag_1", "ssn", "email"]
    assert [(f.column, f.identifier) for f in deid.scan_column_names(cols)] == [
        ("first_name", "name"), ("ssn", "ssn"), ("email", "email")
    ]


# --------------------------------------------------------------------------------------
# Pseudonymisation
# --------------------------------------------------------------------------------------


def _values_for_hmac(n: int) -> list[str]:
    rng = random.Random(20240601)
    special = ["", " ", "a", "?", "None", "é", "naïve café", "日本語テキスト", "🙂 emoji",
               "O'Brien", "quote\"d", "back\\slash", "tab\tnew\nline", "x" * 200,
               "Ünïcödé" * 20, "8222157", "2278392"]
    alphabet = "abcXYZ0129 -_/.,'\"é日🙂"
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
               for _ in range(n // 2)]
    ids = [str(rng.randint(0, 10**9)) for _ in range(n - len(special) - len(randoms))]
    return special + randoms + ids


@pytest.fixture(scope="module")
def hmac_con():
    values = _values_for_hmac(1000)
    assert len(values) == 1000 and "" in values and "日本語テキスト" in values
    connection = duckdb.connect()
    frame = pd.DataFrame({"i": range(len(values)), "s": pd.Series(values, dtype=object)})
    connection.register("_frame", frame)
    connection.execute("CREATE TABLE v AS SELECT i, CAST(s AS VARCHAR) AS s FROM _frame")
    connection.unregister("_frame")
    stored = [s for (s,) in connection.execute("SELECT s FROM v ORDER BY i").fetchall()]
    assert stored == values  # the round trip through DuckDB kept every string intact
    yield connection, values
    connection.close()


@pytest.mark.parametrize(
    ("key", "length"),
    [
        (b"k", 16),
        (deid.DEVELOPMENT_KEY.encode(), 16),
        (b"x" * 64, 64),  # exactly one block
        (b"long key " * 20, 12),  # longer than a block: hashed first
        (bytes(range(256)), 1),  # every byte value, including quote and backslash
        ("ключ-🔑".encode(), 32),
        (b"", 16),
    ],
)
def test_hmac_sql_equals_pseudonymise(hmac_con, key, length):
    con, values = hmac_con
    rows = con.execute(f"SELECT i, {deid.hmac_sql('s', key, length)} FROM v ORDER BY i").fetchall()
    assert [h for _, h in rows] == [deid.pseudonymise(v, key, length) for v in values]
    assert all(len(h) == length and re.fullmatch("[0-9a-f]+", h) for _, h in rows)


def test_hmac_sql_null_and_expressions(con):
    key = b"secret"
    assert con.execute(f"SELECT {deid.hmac_sql('NULL', key)}").fetchall() == [(None,)]
    # Any SQL expression works; non-VARCHAR input is cast to its VARCHAR text first.
    got = con.execute(f"SELECT {deid.hmac_sql('12345', key)}, {deid.hmac_sql(chr(39) + 'a' + chr(39) + ' || ' + chr(39) + 'b' + chr(39), key)}").fetchall()
    assert got == [(deid.pseudonymise("12345", key), deid.pseudonymise("ab", key))]
    # The generated SQL does not contain the raw key.
    assert "secret" not in deid.hmac_sql("s", key)


def test_pseudonymise_is_standard_hmac_sha256():
    # RFC 4231 test case 2.
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert deid.pseudonymise("what do ya want for nothing?", b"Jefe", 64) == expected
    assert deid.pseudonymise("what do ya want for nothing?", b"Jefe") == expected[:16]
    value = "8222157"
    assert deid.pseudonymise(value, b"a") == hmac.new(b"a", value.encode(), hashlib.sha256).hexdigest()[:16]
    assert deid.pseudonymise(value, b"a") != deid.pseudonymise(value, b"b")
    assert deid.pseudonymise(value, b"a") == deid.pseudonymise(value, b"a")
    for bad in (0, 65, True, 16.0):
        with pytest.raises(ValueError):
            deid.pseudonymise(value, b"a", bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            deid.hmac_sql("s", b"a", bad)  # type: ignore[arg-type]


def test_pseudonym_key_from_env(monkeypatch):
    var = "CLINICAL_MLOPS_TEST_KEY_VAR"
    monkeypatch.delenv(var, raising=False)
    assert deid.pseudonym_key_from_env(var) == (
        b"clinical-mlops-development-key-not-for-production", True
    )
    monkeypatch.setenv(var, "")
    assert deid.pseudonym_key_from_env(var) == (deid.DEVELOPMENT_KEY.encode(), True)
    monkeypatch.setenv(var, "s3cr3t-ключ")
    assert deid.pseudonym_key_from_env(var) == ("s3cr3t-ключ".encode(), False)
    # The default variable name.
    monkeypatch.setenv("CLINICAL_MLOPS_PSEUDONYM_KEY", "from-default-var")
    assert deid.pseudonym_key_from_env() == (b"from-default-var", False)
    monkeypatch.delenv("CLINICAL_MLOPS_PSEUDONYM_KEY")
    assert deid.pseudonym_key_from_env()[1] is True


def test_key_fingerprint():
    fp = deid.key_fingerprint(b"s3cr3t")
    assert re.fullmatch("[0-9a-f]{12}", fp)
    assert fp == hashlib.sha256(b"fingerprint:s3cr3t").hexdigest()[:12]
    assert fp != deid.key_fingerprint(b"s3cr3u")
    assert fp == deid.key_fingerprint(b"s3cr3t")
    # Not the pseudonym of anything under that key, and not the key itself.
    assert "s3cr3t" not in fp
    assert fp != deid.pseudonymise("", b"s3cr3t", 12)


# --------------------------------------------------------------------------------------
# The real release
# --------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_extract_has_no_identifier_findings(con):
    if not RELEASE_ZIP.is_file():
        pytest.skip(f"UCI release not found at {RELEASE_ZIP}")
    from clinical_mlops.ingestion.uci import load_uci_encounters

    frame = load_uci_encounters(RELEASE_ZIP)
    assert len(frame) == 101_766
    con.register("frame_view", frame)
    con.execute("CREATE TABLE encounters AS SELECT * FROM frame_view")
    con.unregister("frame_view")

    assert deid.scan_column_names(frame.columns) == []
    findings = deid.scan_table_values(
        con, "encounters", columns=list(diabetes130.COLUMNS), exempt_columns=DECLARED_ID_COLUMNS
    )
    assert findings == []
    # Why the two declared id columns are exempt: their 5-digit codes read as ZIPs.
    ids = deid.scan_table_values(con, "encounters", columns=sorted(DECLARED_ID_COLUMNS))
    assert {(f.column, f.identifier) for f in ids} == {
        ("encounter_id", "zip5"), ("patient_nbr", "zip5")
    }

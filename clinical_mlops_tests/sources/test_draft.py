"""``source init``: a drafted contract lands the sample it was drafted from, and never copies an identifier.

Round trip on every shipped file (the UCI release, the three sepsis files, a synthetic extract):
draft -> the text parses as a contract -> the file, loaded all-VARCHAR, fails no rule of it ->
the identifier scan, with the draft's exemptions, finds nothing. Then samples built to carry
identifiers: they are left out, and their values appear nowhere in the draft.
"""

from __future__ import annotations

import zipfile
from functools import partial
from pathlib import Path

import duckdb
import pytest
import yaml

from clinical_mlops.cli import sources as cli_sources
from clinical_mlops.ingestion import deid
from clinical_mlops.sources import contract, derive
from clinical_mlops.sources.draft import Draft, DraftError, draft_contract
from clinical_mlops_tests.helpers import run_cli

_cli = partial(run_cli, cli_sources.add_source_init_parser, prog="clinical-mlops")

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UCI_ZIP = SHARED_DATA / "diabetes130" / "dataset_diabetes.zip"
SEPSIS_FILES = sorted((SHARED_DATA / "sepsis_survival").glob("*.csv"))


def _shared(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"the shared data is absent ({path})")


def _load(path: Path, c: contract.SourceContract) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    quoted = "'" + str(path).replace("'", "''") + "'"
    delimiter = "'" + c.format.delimiter + "'"
    con.execute(f"CREATE TABLE raw AS SELECT row_number() OVER () AS row_number, * FROM "
                f"read_csv({quoted}, delim={delimiter}, header=true, all_varchar=true, quote='\"', escape='\"')")
    return con


def _assert_round_trip(path: Path, draft: Draft) -> None:
    again = contract.parse_contract(yaml.safe_load(draft.yaml_text), "draft.yaml")
    assert again == draft.contract
    c = draft.contract
    con = _load(path, c)
    try:
        header = [row[0] for row in con.execute("DESCRIBE raw").fetchall()][1:]
        assert header == list(c.columns)
        assert con.execute(derive.failing_rows_sql(c, "raw", "row_number")).fetchall() == []
        exempt = {(e.column, k) for e in c.identifier_scan_exemptions for k in e.kinds}
        vocabularies = {n: s.vocabulary() for n, s in c.columns.items() if s.vocabulary() is not None}
        findings = deid.scan_table_values(con, "raw", columns=header, vocabularies=vocabularies)
        assert [f for f in findings if (f.column, f.identifier) not in exempt] == []
        assert deid.scan_column_names(header) == []
    finally:
        con.close()
    assert draft.excluded == ()
    assert "DRAFT" in draft.yaml_text.splitlines()[0]
    assert c.provenance.startswith("TODO") and c.licence.startswith("TODO")


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory) -> tuple[Path, Draft]:
    _shared(UCI_ZIP)
    with zipfile.ZipFile(UCI_ZIP) as archive:
        member = next(n for n in archive.namelist() if n.endswith("diabetic_data.csv"))
        path = Path(archive.extract(member, tmp_path_factory.mktemp("uci")))
    return path, draft_contract(path, "diabetes130")


def test_the_uci_release_round_trips(diabetes):
    path, draft = diabetes
    _assert_round_trip(path, draft)
    assert draft.rows == 101_766


def test_the_uci_draft_finds_its_roles_missing_token_and_not_measured(diabetes):
    _, draft = diabetes
    c = draft.contract
    assert (draft.roles.encounter_id, draft.roles.patient_id, draft.roles.outcomes) == (
        "encounter_id", "patient_nbr", ["readmitted"])
    assert c.key is not None and c.key.columns == ["encounter_id"]
    assert {(e.column, tuple(e.kinds)) for e in c.identifier_scan_exemptions} == {
        ("encounter_id", ("zip5",)), ("patient_nbr", ("zip5",))}
    assert all("declared id; review" in e.reason for e in c.identifier_scan_exemptions)
    assert c.missing_tokens == ["?"]
    assert {n for n, s in c.columns.items() if s.nullable} == {
        "race", "weight", "payer_code", "medical_specialty", "diag_1", "diag_2", "diag_3"}
    for name in ("max_glu_serum", "A1Cresult"):
        assert c.columns[name].not_measured == "None" and "None" not in c.columns[name].allowed_values
    assert c.columns["readmitted"].allowed_values == ["NO", ">30", "<30"]  # strings, not YAML booleans
    assert c.columns["time_in_hospital"].range.model_dump() == {"min": 1, "max": 14}
    assert c.columns["admission_type_id"].allowed_values == [1, 2, 3, 4, 5, 6, 7, 8]
    assert c.format.line_endings == ["crlf"]


@pytest.mark.parametrize("path", SEPSIS_FILES, ids=lambda p: p.name.rsplit("_", 2)[-2])
def test_each_sepsis_file_round_trips_without_a_key(path):
    draft = draft_contract(path, "sepsis_survival")
    _assert_round_trip(path, draft)
    c = draft.contract
    assert c.key is None and draft.roles.encounter_id is None and draft.roles.patient_id is None
    assert draft.roles.outcomes == ["hospital_outcome_1alive_0dead"]
    assert {n: s.type for n, s in c.columns.items()} == {
        "age_years": "integer", "sex_0male_1female": "integer", "episode_number": "integer",
        "hospital_outcome_1alive_0dead": "integer"}
    assert c.columns["sex_0male_1female"].allowed_values == [0, 1]


def test_sepsis_is_absent_only_when_shared_data_is():
    if not SHARED_DATA.exists():
        pytest.skip("no ../shared/data")
    assert len(SEPSIS_FILES) == 3


def test_a_synthetic_extract_round_trips(tmp_path, small_encounters):
    path = tmp_path / "synthetic_extract.csv"
    small_encounters.to_csv(path, index=False, lineterminator="\n")
    draft = draft_contract(path, "synthetic_diabetes130")
    _assert_round_trip(path, draft)
    assert draft.rows == 3_000 and draft.roles.encounter_id == "encounter_id"


def _write(path: Path, rows: list[list[str]], delimiter: str = ",", newline: str = "\n", bom: bool = False) -> Path:
    text = newline.join(delimiter.join(r) for r in rows) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_missing_tokens_not_measured_delimiter_bom_and_crlf_are_inferred(tmp_path):
    rows = [["visit_id", "ward", "glucose", "test", "smoker", "score", "flag"]]
    for i in range(60):
        rows.append([str(1000 + i), ["North", "South", "?"][i % 3], "NA" if i % 7 == 0 else str(80 + i % 5),
                     ["None", "Norm", ">8"][i % 3], ["Yes", "No", "NO"][i % 3], f"{i % 9}.{i % 4}",
                     ["true", "false"][i % 2]])
    path = _write(tmp_path / "sample.csv", rows, delimiter=";", newline="\r\n", bom=True)
    draft = draft_contract(path, "ward_sample")
    c = draft.contract
    assert (c.format.delimiter, c.format.line_endings) == (";", ["crlf"])
    assert c.missing_tokens == ["?", "NA"]
    assert c.columns["ward"].nullable and c.columns["ward"].missing_tokens == ["?"]
    assert c.columns["ward"].allowed_values == ["North", "South"]
    assert c.columns["glucose"].type == "integer" and c.columns["glucose"].missing_tokens == ["NA"]
    assert c.columns["glucose"].range.model_dump() == {"min": 80, "max": 84}
    assert c.columns["test"].not_measured == "None" and not c.columns["test"].nullable
    assert sorted(c.columns["smoker"].allowed_values) == ["NO", "No", "Yes"]
    assert c.columns["score"].type == "number" and c.columns["score"].range.model_dump() == {"min": 0.0, "max": 8.3}
    assert c.columns["flag"].type == "boolean"
    assert draft.roles.encounter_id == "visit_id" and c.key.columns == ["visit_id"]
    _assert_round_trip(path, draft)


SSN, EMAIL = "123-45-6789", "jane.roe@example.org"


def test_ssn_and_email_columns_are_excluded_and_never_written(tmp_path):
    rows = [["encounter_id", "ssn_field", "contact", "ward"]]
    for i in range(40):
        rows.append([str(500000 + i), f"{100 + i}-45-{6789 + i}" if i else SSN,
                     f"patient{i}@example.org" if i else EMAIL, ["A", "B"][i % 2]])
    path = _write(tmp_path / "leaky.csv", rows)
    draft = draft_contract(path, "leaky")
    assert {e.column: {k for k, _, _ in e.findings} for e in draft.excluded} == {
        "ssn_field": {"ssn"}, "contact": {"email"}}
    assert list(draft.contract.columns) == ["encounter_id", "ward"]
    assert dict((k, n) for k, _, n in draft.excluded[0].findings) == {"ssn": 40}
    for text in (draft.yaml_text, draft.summary()):
        assert SSN not in text and EMAIL not in text and "example.org" not in text and "-45-" not in text
    assert "contact: email" in draft.yaml_text and "strip them from the export" in draft.summary()


def test_a_category_with_zip_or_date_values_is_not_copied(tmp_path):
    rows = [["ward", "site_code", "visit_day", "sex"]]
    for i in range(30):
        rows.append([["A", "B"][i % 2], ["02115", "10001", "X1"][i % 3],
                     ["2008-03-14", "2008-03-15", "unknown"][i % 3], ["F", "M"][i % 2]])
    path = _write(tmp_path / "places.csv", rows)
    draft = draft_contract(path, "places")
    assert {e.column: {k for k, _, _ in e.findings} for e in draft.excluded} == {
        "site_code": {"zip5"}, "visit_day": {"full_date"}}
    assert list(draft.contract.columns) == ["ward", "sex"]
    for value in ("02115", "10001", "2008-03-14", "2008-03-15"):
        assert value not in draft.yaml_text and value not in draft.summary()
    assert draft.contract.key is None and draft.contract.identifier_scan_exemptions == []


def test_a_bad_name_or_file_is_one_line(tmp_path):
    with pytest.raises(DraftError, match=r"^Bad-Name\.yaml: 'Bad-Name' is not a snake_case"):
        draft_contract(tmp_path / "x.csv", "Bad-Name")
    with pytest.raises(DraftError, match="no such file$"):
        draft_contract(tmp_path / "absent.csv", "absent")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DraftError, match="empty.csv: is empty$"):
        draft_contract(tmp_path / "empty.csv", "empty")


def test_the_command_writes_refuses_to_overwrite_and_reports_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "sources"
    monkeypatch.setenv(contract.SOURCES_DIR_ENV, str(folder))
    sample = _write(tmp_path / "sample.csv", [["visit_id", "ward"]] + [[str(10 + i), "AB"[i % 2]] for i in range(9)])
    assert _cli(["source", "init", "wards", "--from", str(sample)]) == 0
    out = capsys.readouterr().out
    written = folder / "wards.yaml"
    assert contract.load_contract_file(written).contract.roles.encounter_id == "visit_id"
    assert f"clinical-mlops land {sample} --source wards" in out
    before = written.read_bytes()

    assert _cli(["source", "init", "wards", "--from", str(sample)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {written}: already exists") and "--force" in err
    assert written.read_bytes() == before

    written.write_text("edited by hand\n")
    assert _cli(["source", "init", "wards", "--from", str(sample), "--force"]) == 0
    assert written.read_bytes() == before

    assert _cli(["source", "init", "other", "--from", str(tmp_path / "absent.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'absent.csv'}: no such file\n" and not (folder / "other.yaml").exists()

    assert _cli(["source", "init", "printed", "--from", str(sample), "--print", "--max-vocabulary", "1"]) == 0
    printed = capsys.readouterr()
    assert not (folder / "printed.yaml").exists()
    assert contract.parse_contract(yaml.safe_load(printed.out), "printed.yaml").columns["ward"].type == "string"
    assert "DRAFT contract 'printed'" in printed.err

"""Every kind of broken extract in :mod:`bad_extracts`: a clear refusal or a reasoned quarantine.

Each case is landed into a copy of a warehouse that already holds one valid, validated
extract, so "nothing changes" is checked against real content. Whatever the outcome, no
message, finding or quarantine reason quotes a value of the file, and the counts reconcile.
A few cases also go through the Dagster ingestion job the way a user runs it
(``clinical-mlops land``), asserting what the user sees.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from clinical_mlops.cli import errors as cli_errors
from clinical_mlops.ingestion import diabetes130, landing
from clinical_mlops.validation import rules as validation
from clinical_mlops.core import warehouse
from clinical_mlops_tests.ingestion import bad_extracts as corpus
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402

SYNTHETIC_SOURCE = synthetic_source()

KEY = b"corpus-test-key"
PREVIOUS = "previous.csv"
TABLES = ("raw.extracts", "raw.synthetic_diabetes130", "staging.synthetic_diabetes130", "staging.synthetic_diabetes130__quarantine")
EXTRACT_COLUMN = {"raw.extracts": "extract_id", "raw.synthetic_diabetes130": "_extract_id",
                  "staging.synthetic_diabetes130": "extract_id", "staging.synthetic_diabetes130__quarantine": "extract_id"}
REQUIRED_KINDS = {
    "missing_column", "extra_column", "renamed_column", "text_in_count", "out_of_vocabulary_code",
    "semicolon_delimiter", "tab_delimiter", "utf8_bom", "latin1_bytes", "mixed_line_endings",
    "quoted_newline_in_field", "duplicated_rows", "duplicated_encounter_ids", "truncated_last_line",
    "empty_file", "header_only", "ten_mb_field", "name_in_values", "ssn_in_values", "phone_in_values",
    "email_in_values", "full_date_in_values", "zip_in_values", "unexpected_label", "negative_count",
    "whitespace_padded_category", "nul_byte", "columns_swapped",
}
REASON = re.compile(r"[A-Za-z0-9_-]+:[a-z0-9_]+")


def _params(outcome: str) -> list:
    return [
        pytest.param(case, id=case.name,
                     marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [])
        for case in corpus.cases(outcome)
    ]


@pytest.fixture(scope="module")
def template_warehouse(tmp_path_factory) -> Path:
    """A warehouse holding one valid extract, landed and validated (copied for each case)."""
    root = tmp_path_factory.mktemp("corpus_template")
    path = root / PREVIOUS
    path.write_bytes(corpus.to_csv_bytes(corpus.previous_extract()))
    with contextlib.closing(warehouse.connect(root / "warehouse.duckdb")) as con:
        assert landing.land_extract(con, path, SYNTHETIC_SOURCE).status == "landed"
        outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, PREVIOUS, pseudonym_key=KEY)
        assert (outcome.rows_valid, outcome.rows_quarantined) == (corpus.ROWS, 0)
    return root / "warehouse.duckdb"


@pytest.fixture
def con(template_warehouse: Path, tmp_path: Path):
    target = tmp_path / "warehouse.duckdb"
    shutil.copyfile(template_warehouse, target)
    connection = warehouse.connect(target)
    yield connection
    connection.close()


def _write(case: corpus.BadExtract, directory: Path) -> Path:
    path = directory / f"{case.name}.csv"
    path.write_bytes(case.file_bytes())
    return path


def _snapshot(con: duckdb.DuckDBPyConnection, *, without: str | None = None) -> dict[str, tuple]:
    """Row count and an order-free hash of every row, per table (optionally leaving one extract out)."""
    snapshot = {}
    for table in TABLES:
        where = f"WHERE {EXTRACT_COLUMN[table]} <> ?" if without else ""
        snapshot[table] = con.execute(
            f"SELECT count(*), coalesce(bit_xor(hash(t)), 0) FROM {table} t {where}", [without] if without else []
        ).fetchone()
    return snapshot


def _rows_for(con: duckdb.DuckDBPyConnection, extract_id: str) -> dict[str, int]:
    """Rows of one extract per table (a table validation has not created yet holds none)."""
    return {
        table: con.execute(f"SELECT count(*) FROM {table} WHERE {EXTRACT_COLUMN[table]} = ?", [extract_id]).fetchone()[0]
        if warehouse.table_exists(con, table) else 0
        for table in TABLES
    }


def _distinctive_values() -> set[str]:
    """Values of the clean extract that would be recognisable in a message (ids, long categories)."""
    frame = corpus.clean_extract()
    return {v for column in frame.columns for v in frame[column] if len(v) >= 5 and v not in diabetes130.COLUMNS}


DISTINCTIVE = _distinctive_values()


def _as_token(number: str) -> re.Pattern:
    """A number on its own, not inside a hash, a run id or a longer number (a timestamp such as
    ``1764640250.02`` does not quote the ICD code ``250.02``)."""
    return re.compile(rf"(?<![0-9A-Za-z.]){re.escape(number)}(?![0-9A-Za-z])")


def assert_quotes_no_data(case: corpus.BadExtract, text: str) -> None:
    """No planted value, no distinctive value of the extract, no long run of one character."""
    for value in case.planted:
        assert value not in text, f"{case.name}: a planted value is quoted"
    quoted = sorted(v for v in DISTINCTIVE if v in text and (not re.fullmatch(r"[0-9.]+", v)
                                                             or _as_token(v).search(text)))
    assert not quoted, f"{case.name}: values of the extract are quoted: {quoted[:5]}"
    assert not re.search(r"(\w)\1{19}", text), f"{case.name}: a field's content is quoted"


# --------------------------------------------------------------------------------------------
# The corpus itself
# --------------------------------------------------------------------------------------------


def test_corpus_covers_the_required_kinds_and_documents_each():
    names = [case.name for case in corpus.CASES]
    assert len(names) == len(set(names)) >= 25
    assert REQUIRED_KINDS <= set(names), sorted(REQUIRED_KINDS - set(names))
    table = dict(re.findall(r"^(\w+) +(refused|rejected|quarantined|landed) ", corpus.__doc__, re.MULTILINE))
    assert table == {case.name: case.outcome for case in corpus.CASES}


def test_every_case_really_differs_from_the_clean_extract():
    clean = corpus.to_csv_bytes(corpus.clean_extract())
    assert not [case.name for case in corpus.CASES if case.file_bytes() == clean]


# --------------------------------------------------------------------------------------------
# Through the domain functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(corpus.REFUSED))
def test_refused_extract_names_the_problem_and_changes_nothing(case, con, tmp_path):
    before = _snapshot(con)
    path = _write(case, tmp_path)
    with pytest.raises(landing.ExtractFormatError) as error:
        landing.land_extract(con, path, SYNTHETIC_SOURCE)
    message = str(error.value)
    assert re.search(case.expect, message), message
    assert_quotes_no_data(case, message)
    assert _rows_for(con, path.name) == dict.fromkeys(TABLES, 0)
    assert _snapshot(con) == before
    with pytest.raises(ValueError, match="no landed rows"):
        validation.validate_extract(con, SYNTHETIC_SOURCE, path.name, pseudonym_key=KEY)


@pytest.mark.parametrize("case", _params(corpus.REJECTED))
def test_extract_with_identifiers_is_rejected_naming_column_and_kind_only(case, con, tmp_path):
    before = _snapshot(con)
    path = _write(case, tmp_path)
    result = landing.land_extract(con, path, SYNTHETIC_SOURCE)
    assert (result.status, result.rows_landed) == ("rejected", 0)
    assert case.expect in {f"{f.column}:{f.identifier}" for f in result.findings}
    (status, rows, reason), = con.execute(
        "SELECT status, rows_landed, rejection_reason FROM raw.extracts WHERE extract_id = ?", [path.name]
    ).fetchall()
    assert (status, rows) == ("rejected", 0)
    assert case.expect.split(":")[0] in reason
    assert_quotes_no_data(case, f"{reason}\n{landing.describe_findings(result.findings)}\n{result!r}")
    assert {t: n for t, n in _rows_for(con, path.name).items() if t != "raw.extracts"} == dict.fromkeys(TABLES[1:], 0)
    assert _snapshot(con, without=path.name) == before
    with pytest.raises(ValueError, match="no landed rows"):
        validation.validate_extract(con, SYNTHETIC_SOURCE, path.name, pseudonym_key=KEY)


@pytest.mark.parametrize("case", _params(corpus.QUARANTINED))
def test_broken_rows_are_quarantined_with_reasons_and_counts_reconcile(case, con, tmp_path):
    before = _snapshot(con)
    path = _write(case, tmp_path)
    result = landing.land_extract(con, path, SYNTHETIC_SOURCE)
    assert (result.status, result.rows_landed) == ("landed", case.rows_landed)
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, path.name, pseudonym_key=KEY)
    assert outcome.reconciles
    assert (outcome.rows_landed, outcome.rows_quarantined) == (case.rows_landed, case.quarantined)
    assert case.expect in outcome.failures, outcome.failures
    counts = _rows_for(con, path.name)
    assert counts["raw.synthetic_diabetes130"] == counts["staging.synthetic_diabetes130"] + counts["staging.synthetic_diabetes130__quarantine"] == case.rows_landed
    assert counts["staging.synthetic_diabetes130__quarantine"] == case.quarantined
    reasons = [r for (r,) in con.execute(
        "SELECT reasons FROM staging.synthetic_diabetes130__quarantine WHERE extract_id = ?", [path.name]).fetchall()]
    assert any(case.expect in r.split("; ") for r in reasons)
    assert all(REASON.fullmatch(part) for r in reasons for part in r.split("; ")), reasons
    assert_quotes_no_data(case, "\n".join(reasons) + json.dumps(outcome.failures))
    assert _snapshot(con, without=path.name) == before


@pytest.mark.parametrize("case", _params(corpus.LANDED))
def test_tolerated_variant_lands_every_row_with_the_clean_values(case, con, tmp_path):
    path = _write(case, tmp_path)
    result = landing.land_extract(con, path, SYNTHETIC_SOURCE)
    assert (result.status, result.rows_landed) == ("landed", corpus.ROWS)
    columns = ", ".join(f'"{c}"' for c in diabetes130.COLUMNS)
    landed = con.execute(
        f"SELECT {columns} FROM raw.synthetic_diabetes130 WHERE _extract_id = ? ORDER BY _row_number", [path.name]
    ).df()
    assert landed.equals(corpus.clean_extract())
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, path.name, pseudonym_key=KEY)
    assert (outcome.rows_valid, outcome.rows_quarantined) == (corpus.ROWS, 0)


# --------------------------------------------------------------------------------------------
# Through the Dagster ingestion job, as a user runs it
# --------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """A data folder and Dagster home of its own, as ``test_cli.py`` sets them for a subprocess."""
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("CLINICAL_MLOPS_PSEUDONYM_KEY", KEY.decode())
    for name in ("MLFLOW_TRACKING_URI", "CLINICAL_MLOPS_LANDING_DIR", "CLINICAL_MLOPS_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return tmp_path


def _land_with_cli(case: corpus.BadExtract, project: Path, capsys) -> tuple[int, str, str, str]:
    """``clinical-mlops land <file>``: exit code, stdout, stderr and the text of the run's Dagster events."""
    import dagster as dg

    from clinical_mlops.cli import main as cli

    path = _write(case, project)
    code = cli.main(["land", str(path), "--source", "synthetic_diabetes130"])
    out, err = capsys.readouterr()
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records()
        assert len(records) == 1
        events = "\n".join(str(entry) for entry in instance.all_logs(records[0].dagster_run.run_id))
    return code, out, err, events


DAGSTER_CASES = {
    "missing_header_row": "refused",
    "ten_mb_field": "refused",
    "ssn_in_values": "rejected",
    "quoted_newline_in_field": "quarantined",
    "empty_column": "quarantined",
}


@pytest.mark.parametrize("name", sorted(DAGSTER_CASES))
def test_cli_land_shows_the_problem_and_leaks_nothing(name, project, capsys):
    case = corpus.BY_NAME[name]
    code, out, err, events = _land_with_cli(case, project, capsys)
    assert "Traceback" not in err
    for text in (out, err, events):
        assert_quotes_no_data(case, text)
    with contextlib.closing(warehouse.connect(project / "data" / "warehouse.duckdb", read_only=True)) as con:
        counts = _rows_for(con, f"{name}.csv")
    if case.outcome == "refused":
        assert code == 1
        assert re.search(rf"^error: .*Extract {name}\.csv refused: .*Nothing was landed in source synthetic_diabetes130\.$", err, re.MULTILINE)
        assert re.search(case.expect.lstrip("^").rstrip("$"), err)
        assert counts == dict.fromkeys(TABLES, 0)
        return
    report = json.loads(out)
    if case.outcome == "rejected":
        assert code == 1
        assert report["status"] == "rejected" and report["rows_landed"] == 0
        assert "check no_direct_identifiers failed on synthetic_diabetes130/raw_extract" in err
        # one line naming the column, the kind of identifier and the count; no Dagster class, no "see the UI"
        column, kind = case.expect.split(":")
        assert re.search(rf"^error: extract {name}\.csv refused by the identifier gate: column {column} holds "
                         rf"{re.escape(cli_errors.IDENTIFIER_PHRASES[kind])} \(\d+ rows\); nothing landed$",
                         err, re.MULTILINE), err
        assert "Dagster" not in err.split("error: ", 1)[1] and "UI" not in err.split("error: ", 1)[1]
        assert {t: n for t, n in counts.items() if t != "raw.extracts"} == dict.fromkeys(TABLES[1:], 0)
        assert case.expect.split(":")[0] in events  # the gate names the column in the event log
        return
    assert code == 0
    assert (report["rows_landed"], report["rows_quarantined"]) == (case.rows_landed, case.quarantined)
    assert report["rows_valid"] + report["rows_quarantined"] == report["rows_landed"]
    assert counts["raw.synthetic_diabetes130"] == counts["staging.synthetic_diabetes130"] + counts["staging.synthetic_diabetes130__quarantine"]
    assert case.expect in events  # the failed check is named in the materialization metadata
    if case.quarantined / case.rows_landed > 0.05:
        assert "warning: check failed (non-blocking): synthetic_diabetes130/validated_extract:quarantine_rate_within_limit" in err

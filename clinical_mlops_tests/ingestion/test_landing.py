"""Landing extracts into raw: content versioning, idempotence, and refusals that lose nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clinical_mlops.ingestion import diabetes130, landing
from clinical_mlops.core import warehouse
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402

SYNTHETIC_SOURCE = synthetic_source()



def _raw_count(con) -> int:
    return con.execute("SELECT count(*) FROM raw.synthetic_diabetes130").fetchone()[0]


def _write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def test_landing_stores_rows_as_text_with_sha256(con, extract_file, small_encounters):
    result = landing.land_extract(con, extract_file, SYNTHETIC_SOURCE)
    assert result.status == "landed"
    assert result.rows_landed == len(small_encounters) == _raw_count(con)
    assert result.sha256 == landing.file_sha256(extract_file)
    stored = con.execute('SELECT max_glu_serum FROM raw.synthetic_diabetes130 WHERE max_glu_serum = \'None\' LIMIT 1').fetchall()
    assert stored == [("None",)], "the literal 'None' (not measured) must survive landing"


def test_identical_file_lands_once_even_under_another_name(con, extract_file, workspace):
    first = landing.land_extract(con, extract_file, SYNTHETIC_SOURCE)
    again = landing.land_extract(con, extract_file, SYNTHETIC_SOURCE)
    copy = workspace.landing / "extract_001_copy.csv"
    copy.write_bytes(extract_file.read_bytes())
    renamed = landing.land_extract(con, copy, SYNTHETIC_SOURCE)
    assert again.status == renamed.status == "already_landed"
    assert renamed.duplicate_of == first.extract_id
    assert _raw_count(con) == first.rows_landed


def test_changed_content_under_a_landed_name_is_refused(con, extract_file, small_encounters):
    landing.land_extract(con, extract_file, SYNTHETIC_SOURCE)
    _write(extract_file, small_encounters.head(100))
    with pytest.raises(landing.ExtractFormatError, match="already landed with different content"):
        landing.land_extract(con, extract_file, SYNTHETIC_SOURCE)
    assert _raw_count(con) == len(small_encounters)


def _drop_column(frame):
    return frame.drop(columns=["num_medications"])


def _rename_column(frame):
    return frame.rename(columns={"A1Cresult": "a1c"})


BAD_FILES = {
    "missing column": (lambda p, f: _write(p, _drop_column(f)), "missing column\\(s\\): num_medications"),
    "renamed column": (lambda p, f: _write(p, _rename_column(f)), "missing column\\(s\\): A1Cresult.*unexpected column\\(s\\): a1c"),
    "empty file": (lambda p, f: p.write_bytes(b""), "empty"),
    "header only": (lambda p, f: p.write_text(",".join(diabetes130.COLUMNS) + "\n"), "header but no rows"),
    "semicolon delimiter": (lambda p, f: f.to_csv(p, index=False, sep=";"), "delimiter"),
    "too many fields": (
        lambda p, f: p.write_text(f.head(3).to_csv(index=False, lineterminator="\n") + ",".join(["1"] * 51) + "\n"),
        "malformed row at line 5: expected 50 fields, found 51",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_are_refused_with_a_clear_error_and_nothing_changes(con, workspace, extract_file, small_encounters, kind):
    landing.land_extract(con, extract_file, SYNTHETIC_SOURCE)
    before = _raw_count(con)
    make, message = BAD_FILES[kind]
    bad = workspace.landing / "bad.csv"
    make(bad, small_encounters.head(50))
    with pytest.raises(landing.ExtractFormatError, match=message):
        landing.land_extract(con, bad, SYNTHETIC_SOURCE)
    assert _raw_count(con) == before
    assert con.execute("SELECT count(*) FROM raw.extracts WHERE extract_id = 'bad.csv'").fetchone()[0] == 0


def test_error_messages_never_quote_data(con, workspace, small_encounters):
    bad = workspace.landing / "bad.csv"
    secret_row = ",".join(["987654321"] * 51)
    bad.write_text(small_encounters.head(2).to_csv(index=False, lineterminator="\n") + secret_row + "\n")
    with pytest.raises(landing.ExtractFormatError) as error:
        landing.land_extract(con, bad, SYNTHETIC_SOURCE)
    assert "987654321" not in str(error.value)


def test_truncated_last_line_lands_padded_for_quarantine(con, workspace, small_encounters):
    text = small_encounters.head(20).to_csv(index=False, lineterminator="\n")
    truncated = workspace.landing / "truncated.csv"
    truncated.write_text(text[: text.rstrip("\n").rfind(",", 0, len(text) - 40)])
    result = landing.land_extract(con, truncated, SYNTHETIC_SOURCE)
    assert result.rows_landed == 20
    assert con.execute("SELECT count(*) FROM raw.synthetic_diabetes130 WHERE readmitted IS NULL").fetchone()[0] == 1


def test_bom_and_crlf_are_tolerated(con, workspace, small_encounters):
    path = workspace.landing / "windows.csv"
    path.write_bytes(b"\xef\xbb\xbf" + small_encounters.head(10).to_csv(index=False, lineterminator="\r\n").encode())
    assert landing.land_extract(con, path, SYNTHETIC_SOURCE).rows_landed == 10
    assert con.execute("SELECT count(*) FROM raw.synthetic_diabetes130 WHERE readmitted LIKE '%\r'").fetchone()[0] == 0


@pytest.mark.parametrize(
    "column,value,kind",
    [
        ("medical_specialty", "123-45-6789", "ssn"),
        ("payer_code", "jane.doe@example.org", "email"),
        ("medical_specialty", "(555) 123-4567", "phone"),
    ],
)
def test_identifier_values_reject_the_extract_naming_column_and_kind_only(con, workspace, small_encounters, column, value, kind):
    frame = small_encounters.head(30).copy()
    frame.loc[5, column] = value
    path = _write(workspace.landing / "leaky.csv", frame)
    result = landing.land_extract(con, path, SYNTHETIC_SOURCE)
    assert result.status == "rejected" and result.rows_landed == 0
    assert {(f.column, f.identifier) for f in result.findings} >= {(column, kind)}
    assert value not in landing.describe_findings(result.findings)
    assert value not in repr(result)
    assert _raw_count(con) == 0
    reason = con.execute("SELECT rejection_reason FROM raw.extracts WHERE extract_id = 'leaky.csv'").fetchone()[0]
    assert column in reason and value not in reason


def test_identifier_column_name_rejects_the_extract(con, workspace, small_encounters):
    frame = small_encounters.head(10).copy()
    frame.insert(2, "patient_name", "x")
    result = landing.land_extract(con, _write(workspace.landing / "named.csv", frame), SYNTHETIC_SOURCE)
    assert result.status == "rejected"
    assert [(f.column, f.location) for f in result.findings] == [("patient_name", "column_name")]
    assert _raw_count(con) == 0


def test_a_second_writer_waits_for_the_lock_instead_of_failing(workspace):
    import subprocess
    import sys
    import time

    warehouse.connect(workspace.warehouse).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(workspace.warehouse)!r}); print('held', flush=True); time.sleep(2)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    con = warehouse.connect(workspace.warehouse, wait_seconds=60)
    waited = time.monotonic() - started
    con.close()
    holder.wait()
    assert waited > 0.5, "the lock was held, so the second writer must have waited"


def test_a_writer_gives_up_with_a_clear_error_after_its_wait(workspace):
    import subprocess
    import sys

    warehouse.connect(workspace.warehouse).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(workspace.warehouse)!r}); print('held', flush=True); time.sleep(5)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(warehouse.WarehouseBusyError, match="locked by another process"):
        warehouse.connect(workspace.warehouse, wait_seconds=0.5)
    holder.kill()
    holder.wait()


def test_extract_hashes_are_those_of_the_source_landed_or_refused(con, extract_file, workspace, small_encounters):
    assert landing.extract_hashes(con, SYNTHETIC_SOURCE.name) == set()
    landed = landing.land_extract(con, extract_file, SYNTHETIC_SOURCE)
    frame = small_encounters.head(30).copy()
    frame.loc[5, "payer_code"] = "jane.doe@example.org"
    refused = landing.land_extract(con, _write(workspace.landing / "leaky.csv", frame), SYNTHETIC_SOURCE)
    assert refused.status == "rejected"
    unreadable = _write(workspace.landing / "extract_002.csv", _drop_column(small_encounters.head(50)))
    with pytest.raises(landing.ExtractFormatError):  # refused before anything is recorded
        landing.land_extract(con, unreadable, SYNTHETIC_SOURCE)
    assert landing.extract_hashes(con, SYNTHETIC_SOURCE.name) == {landed.sha256, refused.sha256}
    assert landing.extract_hashes(con, "another_source") == set()


def test_extract_hashes_before_raw_extracts_exists(tmp_path):
    import duckdb

    fresh = duckdb.connect(str(tmp_path / "empty.duckdb"))
    try:
        assert landing.extract_hashes(fresh, SYNTHETIC_SOURCE.name) == set()
    finally:
        fresh.close()

"""The chunked data-stage paths agree with the whole-frame paths, on small extracts.

Chunk sizes are tiny here (1,000 rows) so failures and duplicates span chunk boundaries; the
10M-row behaviour is measured by ``clinical-mlops bench``, not tested. The chunked feature checks are in
``features/test_chunked_build.py``, the training subsample in ``training/test_training_sample.py``.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from clinical_mlops.core import chunking
from clinical_mlops.ingestion import synthetic
from clinical_mlops.sources import derive
from clinical_mlops.validation import rules as validation
from clinical_mlops.ingestion import diabetes130 as d130
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402
from clinical_mlops_tests.helpers import land

SYNTHETIC_SOURCE = synthetic_source()

KEY = b"test-key"
N = 5_000  # rows of conftest's chunked_encounters
CHUNK = 1_000


# --- generator ---------------------------------------------------------------------------------


def _chunk_labels(rows_per_extract: int, chunk_rows: int, total: int) -> list[np.ndarray]:
    """Chunk index of every row of each file, as write_synthetic_extracts cuts them."""
    labels, chunk = [], 0
    for start in range(0, total, rows_per_extract):
        in_file = min(rows_per_extract, total - start)
        sizes = [min(chunk_rows, in_file - w) for w in range(0, in_file, chunk_rows)]
        labels.append(np.repeat(np.arange(chunk, chunk + len(sizes)), sizes))
        chunk += len(sizes)
    return labels


def test_extract_writer_chunks_never_share_ids_and_are_deterministic(tmp_path):
    config = synthetic.SyntheticConfig(n_encounters=5_000, seed=3)
    paths = synthetic.write_synthetic_extracts(config, tmp_path / "a", rows_per_extract=2_000, chunk_rows=700)
    again = synthetic.write_synthetic_extracts(config, tmp_path / "b", rows_per_extract=2_000, chunk_rows=700)
    assert [p.name for p in paths] == ["synthetic_001.csv", "synthetic_002.csv", "synthetic_003.csv"]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]

    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths]
    assert [len(f) for f in frames] == [2_000, 2_000, 1_000]
    assert all(list(f.columns) == list(d130.COLUMNS) for f in frames)
    whole = pd.concat(frames, ignore_index=True)
    ids = whole["encounter_id"].astype(np.int64).to_numpy()
    assert np.all(np.diff(ids) > 0)  # unique and increasing across chunks and files
    chunk = np.concatenate(_chunk_labels(2_000, 700, 5_000))
    patients = whole["patient_nbr"].astype(np.int64)
    by_chunk = patients.groupby(chunk).agg(["min", "max"])
    assert (by_chunk["min"].to_numpy()[1:] > by_chunk["max"].to_numpy()[:-1]).all()
    assert patients.groupby(patients).apply(lambda s: chunk[s.index].min() == chunk[s.index].max()).all()
    # Each chunk is a fresh draw, not a copy of the first.
    first, second = (whole[chunk == k].drop(columns=["encounter_id", "patient_nbr"]) for k in (0, 1))
    assert not first.reset_index(drop=True).head(100).equals(second.reset_index(drop=True).head(100))


# --- validation ----------------------------------------------------------------------------------


def _planted(frame: pd.DataFrame) -> pd.DataFrame:
    """Failures on both sides of every 1,000-row boundary, duplicates across chunks, a row with three."""
    frame = frame.copy()
    frame.loc[999, "A1Cresult"] = ">9"  # last row of chunk 1
    frame.loc[1000, "num_procedures"] = "-1"  # first row of chunk 2
    frame.loc[1999, "diag_1"] = "XYZ"
    frame.loc[2000, "encounter_id"] = "A12"
    frame.loc[2999, ["gender", "time_in_hospital", "readmitted"]] = ["X", "99", "MAYBE"]
    frame.loc[3000, "patient_nbr"] = "12.5"
    frame.loc[3500, "encounter_id"] = frame.loc[10, "encounter_id"]  # duplicate across chunks 1 and 4
    frame.loc[4999, "encounter_id"] = frame.loc[4000, "encounter_id"]  # duplicate within chunk 5
    frame.loc[4500, "num_lab_procedures"] = "٣"  # a non-ASCII digit fails the integer rule
    return frame


def _whole_frame_reasons(frame: pd.DataFrame) -> dict[int, str]:
    """Row number → reasons by Pandera over the whole frame (the reference)."""
    found = derive.pandera_failures(frame, derive.pandera_schema(SYNTHETIC_SOURCE.contract))
    return {position + 1: "; ".join(sorted(reasons)) for position, reasons in found.items()}


@pytest.mark.parametrize("engine", validation.ENGINES)
def test_chunked_validation_equals_whole_frame_pandera(con, workspace, chunked_encounters, engine):
    frame = _planted(chunked_encounters)
    expected = _whole_frame_reasons(frame)
    assert len(expected) == 11
    extract = land(con, frame, workspace.landing / "planted.csv")
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, extract, pseudonym_key=KEY, chunk_rows=CHUNK, engine=engine)
    quarantined = dict(con.execute("SELECT row_number, reasons FROM staging.synthetic_diabetes130__quarantine ORDER BY 1").fetchall())
    assert quarantined == expected
    assert outcome.rows_quarantined == len(expected) and outcome.rows_valid == N - len(expected)
    assert outcome.reconciles
    assert outcome.failures["encounter_id:duplicate_encounter_id"] == 4
    assert "MAYBE" not in str(quarantined) and "XYZ" not in str(quarantined)
    # Temp tables are gone; the connection holds nothing of the run.
    temp = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]
    assert temp == 0


def test_chunk_size_does_not_change_the_result(con, workspace, chunked_encounters):
    extract = land(con, _planted(chunked_encounters), workspace.landing / "planted.csv")
    results = []
    for chunk_rows in (N * 2, 999, 1):
        validation.validate_extract(con, SYNTHETIC_SOURCE, extract, pseudonym_key=KEY, chunk_rows=chunk_rows)
        results.append(con.execute("SELECT * EXCLUDE (quarantined_at) FROM staging.synthetic_diabetes130__quarantine ORDER BY 2").fetchall())
    assert results[0] == results[1] == results[2]
    assert con.execute("SELECT count(*) FROM staging.synthetic_diabetes130").fetchone()[0] == N - len(results[0])


def test_duplicates_across_extracts_are_found_in_sql_in_any_chunk(con, workspace, chunked_encounters):
    first = land(con, chunked_encounters.iloc[:2_500], workspace.landing / "a.csv")
    second_frame = chunked_encounters.iloc[2_500:].copy()
    second_frame.iloc[1_500, 0] = chunked_encounters.iloc[42, 0]  # second chunk of b.csv clashes with a.csv
    second = land(con, second_frame, workspace.landing / "b.csv")
    validation.validate_extract(con, SYNTHETIC_SOURCE, first, pseudonym_key=KEY, chunk_rows=CHUNK)
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, second, pseudonym_key=KEY, chunk_rows=CHUNK)
    assert outcome.failures == {"encounter_id:duplicate_across_extracts": 1}
    assert con.execute("SELECT row_number FROM staging.synthetic_diabetes130__quarantine WHERE extract_id = 'b.csv'").fetchall() == [(1_501,)]


def test_a_failing_validation_leaves_the_warehouse_unchanged(con, workspace, chunked_encounters, monkeypatch):
    extract = land(con, _planted(chunked_encounters), workspace.landing / "planted.csv")
    validation.validate_extract(con, SYNTHETIC_SOURCE, extract, pseudonym_key=KEY, chunk_rows=CHUNK)
    before = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("staging.synthetic_diabetes130", "staging.synthetic_diabetes130__quarantine")]

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(validation, "_key_rules", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        validation.validate_extract(con, SYNTHETIC_SOURCE, extract, pseudonym_key=KEY, chunk_rows=CHUNK)
    after = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("staging.synthetic_diabetes130", "staging.synthetic_diabetes130__quarantine")]
    assert after == before


TRICKY = ["1", "007", "0", "14", "15", "1e3", " 12", "12 ", "٣", "", "99999999999999999999", "-1", "1.0",
          "250", "250.01", "250.", "V45", "V4", "E878.1", "E87", "?", "\n250", "250\n", "No", "no", "Steady",
          "[70-80)", "Caucasian", ">7", "<30"]


VALUE_RULES = [r for r in derive.rules(SYNTHETIC_SOURCE.contract) if not r.cross_row and r.kind != "not_null"]


@pytest.mark.parametrize("rule", VALUE_RULES, ids=lambda r: r.name)
def test_each_rule_gives_the_same_verdict_in_sql_and_pandera(rule):
    values = pd.Series(TRICKY, dtype=object)
    column = derive.pandera_schema(SYNTHETIC_SOURCE.contract).columns[rule.column]
    check = next(c for c in column.checks if c.name == rule.check)
    in_pandas = check._check_fn(values).tolist()
    with duckdb.connect() as db:
        db.register("tricky", pd.DataFrame({rule.column: values}))
        in_sql = [bool(v) for (v,) in db.execute(
            f"SELECT coalesce({rule.sql}, FALSE) FROM tricky").fetchall()]
    assert in_sql == in_pandas


# --- reading a query in chunks (on the cohort's features: conftest's ``featured``) --------------------


def test_iter_frames_covers_the_query_in_order(con, featured):
    sql = f"SELECT encounter_id FROM {featured.features_table} ORDER BY encounter_id"
    frames = list(chunking.iter_frames(con, sql, chunk_rows=1))
    assert len(frames) > 1
    assert pd.concat(frames)["encounter_id"].tolist() == con.execute(sql).df()["encounter_id"].tolist()

"""The chunked data-stage paths agree with the whole-frame paths, on small extracts.

Chunk sizes are tiny here (1,000 rows) so failures and duplicates span chunk boundaries; the
10M-row behaviour is measured by ``clinical-mlops bench``, not tested.
"""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.core import chunking, tracking, warehouse
from clinical_mlops.features import build as features
from clinical_mlops.ingestion import synthetic
from clinical_mlops.audit import model_card
from clinical_mlops.training import modelling, fit as training
from clinical_mlops.sources import derive
from clinical_mlops.validation import rules as validation
from clinical_mlops.ingestion import diabetes130 as d130
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402
from clinical_mlops_tests.helpers import land

SYNTHETIC_SOURCE = synthetic_source()

KEY = b"test-key"
N = 5_000
CHUNK = 1_000


@pytest.fixture(scope="module")
def encounters() -> pd.DataFrame:
    return synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=N, seed=11))


@pytest.fixture
def con(workspace):
    connection = warehouse.connect(workspace.warehouse)
    yield connection
    connection.close()


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
def test_chunked_validation_equals_whole_frame_pandera(con, workspace, encounters, engine):
    frame = _planted(encounters)
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


def test_chunk_size_does_not_change_the_result(con, workspace, encounters):
    extract = land(con, _planted(encounters), workspace.landing / "planted.csv")
    results = []
    for chunk_rows in (N * 2, 999, 1):
        validation.validate_extract(con, SYNTHETIC_SOURCE, extract, pseudonym_key=KEY, chunk_rows=chunk_rows)
        results.append(con.execute("SELECT * EXCLUDE (quarantined_at) FROM staging.synthetic_diabetes130__quarantine ORDER BY 2").fetchall())
    assert results[0] == results[1] == results[2]
    assert con.execute("SELECT count(*) FROM staging.synthetic_diabetes130").fetchone()[0] == N - len(results[0])


def test_duplicates_across_extracts_are_found_in_sql_in_any_chunk(con, workspace, encounters):
    first = land(con, encounters.iloc[:2_500], workspace.landing / "a.csv")
    second_frame = encounters.iloc[2_500:].copy()
    second_frame.iloc[1_500, 0] = encounters.iloc[42, 0]  # second chunk of b.csv clashes with a.csv
    second = land(con, second_frame, workspace.landing / "b.csv")
    validation.validate_extract(con, SYNTHETIC_SOURCE, first, pseudonym_key=KEY, chunk_rows=CHUNK)
    outcome = validation.validate_extract(con, SYNTHETIC_SOURCE, second, pseudonym_key=KEY, chunk_rows=CHUNK)
    assert outcome.failures == {"encounter_id:duplicate_across_extracts": 1}
    assert con.execute("SELECT row_number FROM staging.synthetic_diabetes130__quarantine WHERE extract_id = 'b.csv'").fetchall() == [(1_501,)]


def test_a_failing_validation_leaves_the_warehouse_unchanged(con, workspace, encounters, monkeypatch):
    extract = land(con, _planted(encounters), workspace.landing / "planted.csv")
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


# --- features and split ----------------------------------------------------------------------------


@pytest.fixture
def featured(con, workspace, encounters):
    spec = load_cohort("synthetic_diabetes130_readmission_30d")
    validation.validate_extract(con, SYNTHETIC_SOURCE, land(con, encounters, workspace.landing / "clean.csv"), pseudonym_key=KEY)
    features.build_features(con, spec)
    features.assign_split(con, spec)
    return spec


@pytest.mark.parametrize("engine", features.FEATURE_CHECK_ENGINES)
def test_chunked_feature_schema_check_equals_whole_frame(con, featured, engine):
    spec = featured
    con.execute(f"""UPDATE {spec.features_table} SET number_inpatient = -1
                    WHERE encounter_id IN (SELECT encounter_id FROM {spec.features_table} ORDER BY 1 LIMIT 3)""")
    con.execute(f"""UPDATE {spec.features_table} SET label = 2
                    WHERE encounter_id IN (SELECT encounter_id FROM {spec.features_table} ORDER BY 1 DESC LIMIT 2)""")
    con.execute(f"""UPDATE {spec.features_table} SET encounter_id = (SELECT min(encounter_id) FROM {spec.features_table})
                    WHERE encounter_id = (SELECT max(encounter_id) FROM {spec.features_table})""")
    whole = features._schema_failure_counts(features.load_features(con, spec), features.feature_schema(spec))
    chunked = features.check_feature_schema(con, spec, chunk_rows=1, engine=engine)  # one 2,048-row vector a time
    assert chunked.failures == whole
    assert {key.split(":")[0] for key in whole} == {"number_inpatient", "label", "encounter_id"}
    assert whole["encounter_id:field_uniqueness"] == 2
    assert chunked.rows_checked == con.execute(f"SELECT count(*) FROM {spec.features_table}").fetchone()[0]


def test_the_sql_sample_catches_what_sql_cannot_see(con, featured):
    spec = featured
    con.execute(f"ALTER TABLE {spec.features_table} ALTER payer_code TYPE INTEGER USING length(payer_code)")
    found = features.check_feature_schema(con, spec, sample_rows=100)
    assert any(key.startswith("payer_code:") for key in found.failures)


def test_streamed_id_set_hash_equals_hashing_the_whole_set(con, featured):
    keys = sorted(k for (k,) in con.execute(
        "SELECT DISTINCT patient_key FROM ml.splits WHERE cohort = ? AND split = 'train'", [featured.name]).fetchall())
    expected = hashlib.sha256(b"".join(k.encode() + b"\n" for k in keys)).hexdigest()
    assert features._id_set_hash(con, featured.name, "train", batch_rows=7) == expected
    assert features.summarise_split(con, featured).train_ids_sha256 == expected


def test_iter_frames_covers_the_query_in_order(con, featured):
    sql = f"SELECT encounter_id FROM {featured.features_table} ORDER BY encounter_id"
    frames = list(chunking.iter_frames(con, sql, chunk_rows=1))
    assert len(frames) > 1
    assert pd.concat(frames)["encounter_id"].tolist() == con.execute(sql).df()["encounter_id"].tolist()


# --- training at scale -----------------------------------------------------------------------------


def test_training_subsample_is_patient_grouped_deterministic_and_recorded(con, workspace, featured):
    spec = featured
    full = features.load_training_sample(con, spec, max_rows=10**9, seed=1)
    assert not full.subsampled and full.used_rows == full.full_rows
    cap = full.full_rows // 3
    draws = [features.load_training_sample(con, spec, max_rows=cap, seed=s) for s in (5, 5, 6)]
    assert draws[0].frame["encounter_id"].tolist() == draws[1].frame["encounter_id"].tolist()
    assert set(draws[0].frame["encounter_id"]) != set(draws[2].frame["encounter_id"])
    sample = draws[0]
    assert sample.subsampled and 0 < sample.used_rows <= cap and sample.full_rows == full.full_rows
    per_patient = full.frame.groupby("patient_key").size()
    used = sample.frame.groupby("patient_key").size()
    assert (per_patient.loc[used.index] == used).all()  # whole patients only

    params = modelling.LogisticRegressionParams(max_iter=200)
    outcome = training.train_and_register(
        con, spec, role="baseline", pipeline=modelling.build_logistic_regression(spec, params),
        params=params.as_dict(), tracking_uri=workspace.tracking_uri, artifact_root=workspace.artifacts,
        max_training_rows=cap, subsample_seed=5, chunk_rows=CHUNK,
    )
    assert outcome.train_rows_used == sample.used_rows and outcome.train_rows == full.full_rows
    test_rows = con.execute("SELECT count(*) FROM ml.splits WHERE cohort = ? AND split = 'test'", [spec.name]).fetchone()[0]
    predicted = con.execute(
        """SELECT count(*), count(DISTINCT p.encounter_id) FROM ml.predictions p
           JOIN ml.splits s ON s.cohort = p.cohort AND s.encounter_id = p.encounter_id AND s.split = 'test'
           WHERE p.model_version = ?""", [outcome.model.version]).fetchone()
    assert predicted == (test_rows, test_rows) == (outcome.test_rows, outcome.test_rows)

    tracking.configure(workspace.tracking_uri, workspace.artifacts)
    run_params = MlflowClient().get_run(outcome.model.run_id).data.params
    assert run_params["train_rows_used"] == str(sample.used_rows)
    assert run_params["train_rows"] == str(full.full_rows)
    assert run_params["subsample_seed"] == "5" and run_params["max_training_rows"] == str(cap)
    recorded = con.execute(
        "SELECT train_rows_used, train_rows_full, subsample_seed, subsampled FROM ml.training_samples "
        "WHERE model_version = ?", [outcome.model.version]).fetchone()
    assert recorded == (sample.used_rows, full.full_rows, 5, True)
    text = model_card.sample_text(model_card.training_sample(con, outcome.model.name, outcome.model.version))
    assert f"{sample.used_rows:,} of {full.full_rows:,}" in text and "seed 5" in text

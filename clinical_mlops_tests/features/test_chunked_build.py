"""The feature build's chunked paths agree with the whole-frame ones (clinical_mlops.features.build): the
feature schema check read a vector at a time, its SQL sample, and the split's streamed id-set hash.

On conftest's ``featured``: 5,000 synthetic encounters, validated, featurised and split; the chunked
validation and generator tests are in ``bench/test_scale.py``.
"""

from __future__ import annotations

import hashlib

import pytest

from clinical_mlops.features import build as features


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

"""Batch scoring: champion resolution with fallback, canonical input hashes, and the batch_predictions asset."""

from __future__ import annotations

import hashlib

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.registry import aliases as registry
from clinical_mlops.scoring import champion as scoring
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops_tests import _trained

COHORT = "readmission_30d"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_template, small_encounters):
    """Three extracts landed; the candidate trained on the first two (the third arrives later)."""
    return _trained.build(tmp_path_factory.mktemp("scoring"), mlflow_template, small_encounters,
                          n_extracts=3, train_on=2)


@pytest.fixture
def configured(trained):
    tracking.configure(trained.workspace.tracking_uri, trained.workspace.artifacts)
    return trained


# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------


def _record(spec):
    record = {name: 3 for name in spec.numeric_features}
    record.update({name: "x" for name in spec.categorical_features})
    return record


def test_input_hash_is_canonical_and_sensitive_to_every_value():
    spec = load_cohort(COHORT)
    record = _record(spec)
    as_floats = {k: float(v) if k in spec.numeric_features else v for k, v in record.items()}
    assert scoring.input_sha256(record, spec) == scoring.input_sha256(as_floats, spec)  # 3 and 3.0 are one input
    assert scoring.input_sha256(dict(reversed(list(record.items()))), spec) == scoring.input_sha256(record, spec)
    for name in spec.features:
        changed = dict(record, **{name: 4 if name in spec.numeric_features else "y"})
        assert scoring.input_sha256(changed, spec) != scoring.input_sha256(record, spec), name


def test_input_hash_is_the_sha256_of_this_exact_text():
    """The hash recorded with every prediction, pinned: a refactor must not change one byte of it."""
    from types import SimpleNamespace

    spec = SimpleNamespace(numeric_features=("b", "a"), categorical_features=("c",))
    text = '{"a":3.0,"b":0.5,"c":"é"}'.encode()
    assert scoring.input_sha256({"a": 3, "b": 0.5, "c": "é"}, spec) == hashlib.sha256(text).hexdigest()


def test_batch_and_row_hashes_agree():
    import pandas as pd

    spec = load_cohort(COHORT)
    frame = pd.DataFrame([_record(spec), dict(_record(spec), time_in_hospital=5)])
    assert scoring.input_hashes(frame, spec) == [scoring.input_sha256(r, spec) for r in frame.to_dict("records")]


# ---------------------------------------------------------------------------------------------
# champion resolution
# ---------------------------------------------------------------------------------------------


def test_no_registered_model_is_a_clear_error(configured):
    with pytest.raises(scoring.NoModelError, match="prolonged_stay_candidate"):
        scoring.resolve_champion("prolonged_stay")


def test_without_a_champion_alias_the_latest_candidate_is_used_and_said(configured):
    ref = scoring.resolve_champion(COHORT)
    assert ref.source == scoring.SOURCE_FALLBACK and "no 'champion' alias" in ref.note
    assert ref.name == "readmission_30d_candidate" and ref.version == configured.outcome.model.version
    assert ref.model_card_sha256 is None
    assert ref.operating_threshold == pytest.approx(configured.outcome.operating_threshold)


# ---------------------------------------------------------------------------------------------
# the batch_predictions asset
# ---------------------------------------------------------------------------------------------


def _materialize(trained, extract_id):
    from clinical_mlops.defs.scoring.assets import build_batch_predictions

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("extracts", [extract_id])
    return dg.materialize(
        [build_batch_predictions(trained.spec)], partition_key=extract_id, instance=instance,
        resources=trained.workspace.resources(),
    )


def test_batch_predictions_score_a_new_extract_with_full_provenance(configured):
    spec, new_extract = configured.spec, configured.extract_ids[2]
    result = _materialize(configured, new_extract)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "predictions_traceable" and check.passed
    metadata = result.asset_materializations_for_node("readmission_30d__batch_predictions")[0].metadata
    assert metadata["model_source"].value == scoring.SOURCE_FALLBACK
    with warehouse.connect(configured.workspace.warehouse) as con:
        rows = con.execute(
            """SELECT count(*), count(DISTINCT model_version), min(model_version), count(input_sha256),
                      count(predicted_at), count(model_card_sha256)
               FROM ml.batch_predictions WHERE cohort = ? AND extract_id = ?""",
            [spec.name, new_extract],
        ).fetchall()[0]
        in_cohort = len(scoring.extract_feature_frame(con, spec, new_extract))
    n, versions, version, hashes, stamps, cards = rows
    assert n == metadata["rows_scored"].value == in_cohort > 0
    assert versions == 1 and version == configured.outcome.model.version
    assert hashes == stamps == n and cards == 0  # no model card recorded yet: null, not invented
    text = str({k: v.value for k, v in metadata.items()})
    with warehouse.connect(configured.workspace.warehouse) as con:
        some_ids = [str(r[0]) for r in con.execute(
            "SELECT encounter_id FROM ml.batch_predictions WHERE extract_id = ? LIMIT 20", [new_extract]).fetchall()]
    assert not any(i in text for i in some_ids), "metadata must not carry encounter ids"


def test_batch_scores_match_the_training_time_test_predictions(configured):
    """Same model, same feature SQL: an encounter scored in batch gets its held-out test score."""
    spec, first_extract = configured.spec, configured.extract_ids[0]
    assert _materialize(configured, first_extract).success
    with warehouse.connect(configured.workspace.warehouse) as con:
        pairs = con.execute(
            """SELECT b.score, p.score, b.input_sha256 FROM ml.batch_predictions b
               JOIN ml.predictions p ON p.encounter_id = b.encounter_id AND p.model_version = b.model_version
                                    AND p.model_name = b.model_name AND p.split = 'test'
               WHERE b.cohort = ? AND b.extract_id = ?""",
            [spec.name, first_extract],
        ).fetchall()
        features = con.execute(
            f"""SELECT f.* FROM {spec.features_table} f JOIN ml.batch_predictions b USING (encounter_id)
                WHERE b.extract_id = ? ORDER BY encounter_id LIMIT 50""", [first_extract]).df()
        stored = [r[0] for r in con.execute(
            """SELECT b.input_sha256 FROM ml.batch_predictions b JOIN (
                   SELECT encounter_id FROM ml.batch_predictions WHERE extract_id = ? ORDER BY encounter_id LIMIT 50
               ) USING (encounter_id) WHERE b.extract_id = ? ORDER BY b.encounter_id""",
            [first_extract, first_extract]).fetchall()]
    assert len(pairs) > 50
    assert all(abs(batch - test) < 1e-12 for batch, test, _ in pairs)
    assert stored == scoring.input_hashes(features, spec)


def test_rescoring_a_partition_replaces_its_rows(configured):
    extract = configured.extract_ids[2]
    assert _materialize(configured, extract).success
    with warehouse.connect(configured.workspace.warehouse) as con:
        once = con.execute("SELECT count(*), count(DISTINCT encounter_id) FROM ml.batch_predictions "
                           "WHERE extract_id = ?", [extract]).fetchall()[0]
    assert once[0] == once[1]


def test_the_champion_alias_wins_and_its_card_hash_is_carried(configured):
    ws = configured.workspace
    client = MlflowClient()
    name, v1 = "readmission_30d_candidate", configured.outcome.model.version
    source = client.get_model_version(name, v1).source
    v2 = client.create_model_version(name, source, run_id=configured.outcome.model.run_id).version
    client.set_model_version_tag(name, v2, "model_card_sha256", "ab" * 32)
    with warehouse.connect(ws.warehouse) as con:
        registry.promote(con, name, v2, actor="test", reason="promotion for the scoring test", policy_sha256="0" * 64)
    ref = scoring.resolve_champion(COHORT)
    assert (ref.version, ref.source, ref.model_card_sha256) == (str(v2), scoring.SOURCE_ALIAS, "ab" * 32)
    result = _materialize(configured, configured.extract_ids[2])
    metadata = result.asset_materializations_for_node("readmission_30d__batch_predictions")[0].metadata
    assert metadata["model"].value == f"{name} v{v2}" and metadata["model_source"].value == scoring.SOURCE_ALIAS
    with warehouse.connect(ws.warehouse) as con:
        versions = con.execute("SELECT DISTINCT model_version, model_card_sha256 FROM ml.batch_predictions "
                               "WHERE extract_id = ?", [configured.extract_ids[2]]).fetchall()
    assert versions == [(str(v2), "ab" * 32)]


def test_a_model_trained_on_other_features_is_refused(configured):
    spec = load_cohort("prolonged_stay")  # different feature list
    ref = scoring.resolve_champion(COHORT)
    with pytest.raises(ValueError, match="other features than the cohort spec"):
        scoring.load_scoring_model(ref, spec)


def _automation_fixture(gate_passes: dict):
    """Stand-ins for the upstream assets (same keys), with the blocking gate of validated_encounters."""
    from clinical_mlops.defs.partitions import extract_partitions
    from clinical_mlops.defs.scoring.assets import build_batch_predictions

    # Per-extract gate: a check spec partitioned like its asset (Dagster 1.13 preview), so the latest
    # result of *this* extract's check gates it, not the latest result of any extract's.
    gate_spec = dg.AssetCheckSpec("landed_rows_reconcile", asset="validated_encounters", blocking=True,
                                  partitions_def=extract_partitions)

    @dg.asset(key="validated_encounters", partitions_def=extract_partitions, kinds={"python"},
              check_specs=[gate_spec])
    def validated(context):
        yield dg.Output(None)
        yield dg.AssetCheckResult(passed=gate_passes.get(context.partition_key, True))

    @dg.asset(key=[COHORT, "candidate_model"], kinds={"python"})
    def candidate() -> None:
        return None

    batch = build_batch_predictions(load_cohort(COHORT))
    return validated, candidate, batch


def test_batch_scoring_follows_new_validated_extracts_only():
    """Declarative automation: a validated extract is scored once; a retrained model does not
    re-score old extracts; an extract whose blocking gate failed is not scored."""
    gate = {"bad.csv": False}
    validated, candidate, batch = _automation_fixture(gate)
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey([COHORT, "batch_predictions"])

    from clinical_mlops.defs.resources import TrackingResource, WarehouseResource

    defs = dg.Definitions(  # the resources are never used: conditions are only evaluated
        assets=[validated, candidate, batch],
        resources={"warehouse": WarehouseResource(path="unused.duckdb"),
                   "tracking": TrackingResource(tracking_uri="sqlite:///unused.db", artifact_root="unused")},
    )

    def requested(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                   asset_selection=dg.AssetSelection.assets(key), cursor=cursor)
        return set(result.get_requested_partitions(key)), result.cursor

    cursor = requested(None)[1]
    instance.add_dynamic_partitions("extracts", ["month_000.csv", "bad.csv"])
    dg.materialize([candidate], instance=instance)
    parts, cursor = requested(cursor)
    assert parts == set()  # not validated yet
    for partition in ("month_000.csv", "bad.csv"):
        dg.materialize([validated], instance=instance, partition_key=partition, raise_on_error=False)
    parts, cursor = requested(cursor)
    assert parts == {"month_000.csv"}  # the failed gate blocks "bad.csv"
    dg.materialize([candidate], instance=instance)  # a retrain
    parts, cursor = requested(cursor)
    assert parts == set()  # neither the scored extract nor the gated one


def test_batch_predictions_depend_on_the_extract_and_the_candidate():
    from clinical_mlops.defs.scoring.assets import build_batch_predictions

    asset = build_batch_predictions(load_cohort(COHORT))
    key = dg.AssetKey([COHORT, "batch_predictions"])
    assert {d.asset_key for d in asset.specs_by_key[key].deps} == {
        dg.AssetKey("validated_encounters"), dg.AssetKey([COHORT, "candidate_model"])}
    assert asset.automation_conditions_by_key[key].get_label() == "score_new_extract"


def test_chunked_scoring_equals_scoring_in_one_chunk(configured):
    """Streaming in small chunks stores the same rows and hashes as one chunk; a rerun replaces them."""
    spec, extract = configured.spec, configured.extract_ids[2]
    model = scoring.load_scoring_model(scoring.resolve_champion(spec.name), spec)
    stored = []
    with warehouse.connect(configured.workspace.warehouse) as con:
        for chunk_rows in (10**9, 300):
            summary = scoring.score_extract(con, model, extract, chunk_rows=chunk_rows, now=scoring.utc_now())
            rows = con.execute(
                """SELECT encounter_id, input_sha256, score, flagged, model_version FROM ml.batch_predictions
                   WHERE cohort = ? AND extract_id = ? ORDER BY encounter_id""", [spec.name, extract]).fetchall()
            stored.append((summary, rows))
    (one, rows_one), (many, rows_many) = stored
    assert one.rows_scored > 600  # several chunks
    assert rows_one == rows_many and len(rows_one) == one.rows_scored
    assert one.scores_sha256 == many.scores_sha256
    assert (one.rows_flagged, one.mean_score) == (many.rows_flagged, many.mean_score)

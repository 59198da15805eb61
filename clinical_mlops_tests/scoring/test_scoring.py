"""Batch scoring: champion resolution (no fallback), canonical input hashes, the batch_predictions asset and
its provenance check."""

from __future__ import annotations

import hashlib

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.registry import aliases as registry
from clinical_mlops.scoring import champion as scoring
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.features.build import cohort_rows_sql
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops_tests import _trained

COHORT = "synthetic_diabetes130_readmission_30d"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_template, small_encounters):
    """Three extracts landed; the candidate trained on the first two (the third arrives later)."""
    return _trained.build(tmp_path_factory.mktemp("scoring"), mlflow_template, small_encounters,
                          n_extracts=3, train_on=2)


CANDIDATE = "synthetic_diabetes130_readmission_30d_candidate"
CARD = "cd" * 32


@pytest.fixture
def configured(trained):
    tracking.configure(trained.workspace.tracking_uri, trained.workspace.artifacts)
    return trained


@pytest.fixture
def no_champion(configured):
    """The candidate registered, no ``champion`` alias anywhere (restored afterwards)."""
    client = MlflowClient()
    held = {name: client.get_registered_model(name).aliases.get("champion")
            for name in scoring.champion_model_names(COHORT) if _registered(client, name)}
    for name, version in held.items():
        if version is not None:
            client.delete_registered_model_alias(name, "champion")
    yield configured
    for name, version in held.items():
        if version is not None:
            client.set_registered_model_alias(name, "champion", version)


@pytest.fixture
def champion(configured):
    """The trained candidate made champion by setting the MLflow alias, with a model card hash recorded."""
    client = MlflowClient()
    version = configured.outcome.model.version
    client.set_model_version_tag(CANDIDATE, version, "model_card_sha256", CARD)
    client.set_registered_model_alias(CANDIDATE, "champion", version)
    return configured


def _registered(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


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
    with pytest.raises(scoring.NoModelError, match="^no champion for synthetic_diabetes130_prolonged_stay: "):
        scoring.resolve_champion("synthetic_diabetes130_prolonged_stay")


def test_without_a_champion_alias_nothing_is_chosen(no_champion):
    """The latest registered version is no fallback: no alias, no model, and the line says how to promote."""
    with pytest.raises(scoring.NoModelError) as refused:
        scoring.resolve_champion(COHORT)
    assert str(refused.value) == scoring.no_champion_reason(COHORT)
    assert str(refused.value) == (
        "no champion for synthetic_diabetes130_readmission_30d: no model has passed the promotion gate; run the release (clinical-mlops "
        "demo, or materialize synthetic_diabetes130_readmission_30d/promotion) or approve one with clinical-mlops promote --model "
        "synthetic_diabetes130_readmission_30d_candidate --version N --approver NAME --reason TEXT")
    assert not hasattr(scoring, "SOURCE_FALLBACK")


def test_the_champion_alias_is_resolved_with_its_card_and_threshold(champion):
    ref = scoring.resolve_champion(COHORT)
    assert (ref.name, ref.version, ref.source) == (CANDIDATE, champion.outcome.model.version, scoring.SOURCE_ALIAS)
    assert ref.model_card_sha256 == CARD
    assert ref.operating_threshold == pytest.approx(champion.outcome.operating_threshold)


def test_a_mitigated_champion_is_found_and_two_champions_are_refused(champion):
    client = MlflowClient()
    version = champion.outcome.model.version
    source = client.get_model_version(CANDIDATE, version).source
    mitigated = "synthetic_diabetes130_readmission_30d_mitigated"
    if not _registered(client, mitigated):
        client.create_registered_model(mitigated)
    mv = client.create_model_version(mitigated, source, run_id=champion.outcome.model.run_id).version
    client.set_registered_model_alias(mitigated, "champion", mv)
    try:
        with pytest.raises(scoring.AmbiguousChampionError) as refused:
            scoring.resolve_champion(COHORT)
        assert f"{CANDIDATE} v{version}" in str(refused.value) and f"{mitigated} v{mv}" in str(refused.value)
        client.delete_registered_model_alias(CANDIDATE, "champion")
        ref = scoring.resolve_champion(COHORT)
        assert (ref.name, ref.version, ref.source) == (mitigated, str(mv), scoring.SOURCE_ALIAS)
    finally:
        client.delete_registered_model_alias(mitigated, "champion")
        client.set_registered_model_alias(CANDIDATE, "champion", version)


# ---------------------------------------------------------------------------------------------
# the batch_predictions asset
# ---------------------------------------------------------------------------------------------


def _materialize(trained, extract_id, *, raise_on_error: bool = True):
    from clinical_mlops.defs.scoring.assets import build_batch_predictions

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("synthetic_diabetes130_extracts", [extract_id])
    return dg.materialize(
        [build_batch_predictions(trained.spec)], partition_key=extract_id, instance=instance,
        resources=trained.workspace.resources(), raise_on_error=raise_on_error,
    )


def test_batch_predictions_score_a_new_extract_with_full_provenance(champion):
    spec, new_extract = champion.spec, champion.extract_ids[2]
    result = _materialize(champion, new_extract)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "predictions_traceable" and check.passed
    assert check.metadata["evidence"].value == "pass" and check.severity == dg.AssetCheckSeverity.ERROR
    metadata = result.asset_materializations_for_node("synthetic_diabetes130_readmission_30d__batch_predictions")[0].metadata
    assert metadata["model_source"].value == scoring.SOURCE_ALIAS
    with warehouse.connect(champion.workspace.warehouse) as con:
        rows = con.execute(
            """SELECT count(*), count(DISTINCT model_version), min(model_version), count(input_sha256),
                      count(predicted_at), count(*) FILTER (WHERE model_card_sha256 = ?),
                      count(*) FILTER (WHERE model_source = 'champion_alias')
               FROM ml.batch_predictions WHERE cohort = ? AND extract_id = ?""",
            [CARD, spec.name, new_extract],
        ).fetchall()[0]
        in_cohort = len(scoring.extract_feature_frame(con, spec, new_extract))
    n, versions, version, hashes, stamps, cards, aliased = rows
    assert n == metadata["rows_scored"].value == in_cohort > 0
    assert versions == 1 and version == champion.outcome.model.version
    assert hashes == stamps == cards == aliased == n
    text = str({k: v.value for k, v in metadata.items()})
    with warehouse.connect(champion.workspace.warehouse) as con:
        some_ids = [str(r[0]) for r in con.execute(
            "SELECT encounter_id FROM ml.batch_predictions WHERE extract_id = ? LIMIT 20", [new_extract]).fetchall()]
    assert not any(i in text for i in some_ids), "metadata must not carry encounter ids"


def test_without_a_champion_batch_scoring_fails_with_one_line_and_writes_nothing(no_champion):
    from clinical_mlops.scoring import steps

    extract = no_champion.extract_ids[1]
    reason = scoring.no_champion_reason(COHORT)
    with warehouse.connect(no_champion.workspace.warehouse) as con:
        scoring.ensure_tables(con)
        con.execute("DELETE FROM ml.batch_predictions WHERE extract_id = ?", [extract])
        with pytest.raises(steps.StepError) as refused:
            steps.score_batch(con, no_champion.spec, extract, tracking_uri=no_champion.workspace.tracking_uri,
                              artifact_root=no_champion.workspace.artifacts)
    assert refused.value.description == reason and refused.value.allow_retries is False
    assert "\n" not in reason
    result = _materialize(no_champion, extract, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data.description == reason
    assert result.get_asset_check_evaluations() == []
    with warehouse.connect(no_champion.workspace.warehouse) as con:
        written = con.execute("SELECT count(*) FROM ml.batch_predictions WHERE extract_id = ?", [extract]).fetchall()
    assert written == [(0,)], "nothing may be written as a prediction without a champion"


def test_predictions_traceable_fails_on_a_champion_without_a_model_card(configured):
    """The check reads the nullable provenance: a champion whose card was never recorded cannot pass."""
    client = MlflowClient()
    version = configured.outcome.model.version
    if client.get_model_version(CANDIDATE, version).tags.get("model_card_sha256"):
        client.delete_model_version_tag(CANDIDATE, version, "model_card_sha256")
    client.set_registered_model_alias(CANDIDATE, "champion", version)
    result = _materialize(configured, configured.extract_ids[2])
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["evidence"].value == "fail"
    assert check.metadata["card_missing"].value == check.metadata["rows_checked"].value > 0
    assert "have no model card sha256" in check.description


def test_provenance_fails_on_a_row_with_a_null_card_or_another_source_or_version(champion):
    from clinical_mlops.scoring import steps

    extract = champion.extract_ids[2]
    assert _materialize(champion, extract).success
    ref = scoring.resolve_champion(COHORT)
    with warehouse.connect(champion.workspace.warehouse) as con:
        clean = steps.check_provenance(con, COHORT, extract, ref, CARD)
        assert clean.evidence().status == "pass", clean.evidence().reason
        one = con.execute("SELECT min(encounter_id) FROM ml.batch_predictions WHERE extract_id = ?",
                          [extract]).fetchall()[0][0]
        edits = {
            "model_card_sha256 = NULL": "card_missing",
            "model_card_sha256 = '" + "ef" * 32 + "'": "card_mismatch",
            "model_source = 'latest_candidate_fallback'": "not_champion_alias",
            "model_version = '999'": "not_the_champion",
            "input_sha256 = 'abc'": "bad_input_hash",
        }
        for edit, counter in edits.items():
            con.execute("BEGIN TRANSACTION")
            con.execute(f"UPDATE ml.batch_predictions SET {edit} WHERE extract_id = ? AND encounter_id = ?",
                        [extract, one])
            found = steps.check_provenance(con, COHORT, extract, ref, CARD)
            con.execute("ROLLBACK")
            assert getattr(found, counter) == 1, edit
            assert found.evidence().status == "fail" and "1 of" in found.evidence().reason, edit
        unregistered = steps.check_provenance(con, COHORT, extract, ref, None)
    assert unregistered.evidence().status == "fail" and unregistered.card_mismatch == unregistered.rows


def test_batch_scores_match_the_training_time_test_predictions(champion, configured):
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


def test_rescoring_a_partition_replaces_its_rows(champion, configured):
    extract = configured.extract_ids[2]
    assert _materialize(configured, extract).success
    with warehouse.connect(configured.workspace.warehouse) as con:
        once = con.execute("SELECT count(*), count(DISTINCT encounter_id) FROM ml.batch_predictions "
                           "WHERE extract_id = ?", [extract]).fetchall()[0]
    assert once[0] == once[1]


def test_the_champion_alias_wins_and_its_card_hash_is_carried(configured):
    ws = configured.workspace
    client = MlflowClient()
    name, v1 = "synthetic_diabetes130_readmission_30d_candidate", configured.outcome.model.version
    source = client.get_model_version(name, v1).source
    v2 = client.create_model_version(name, source, run_id=configured.outcome.model.run_id).version
    client.set_model_version_tag(name, v2, "model_card_sha256", "ab" * 32)
    with warehouse.connect(ws.warehouse) as con:
        registry.promote(con, name, v2, actor="test", reason="promotion for the scoring test", policy_sha256="0" * 64)
    ref = scoring.resolve_champion(COHORT)
    assert (ref.version, ref.source, ref.model_card_sha256) == (str(v2), scoring.SOURCE_ALIAS, "ab" * 32)
    result = _materialize(configured, configured.extract_ids[2])
    metadata = result.asset_materializations_for_node("synthetic_diabetes130_readmission_30d__batch_predictions")[0].metadata
    assert metadata["model"].value == f"{name} v{v2}" and metadata["model_source"].value == scoring.SOURCE_ALIAS
    with warehouse.connect(ws.warehouse) as con:
        versions = con.execute("SELECT DISTINCT model_version, model_card_sha256 FROM ml.batch_predictions "
                               "WHERE extract_id = ?", [configured.extract_ids[2]]).fetchall()
    assert versions == [(str(v2), "ab" * 32)]


def test_a_model_trained_on_other_features_is_refused(champion, configured):
    spec = load_cohort("synthetic_diabetes130_prolonged_stay")  # different feature list
    ref = scoring.resolve_champion(COHORT)
    with pytest.raises(ValueError, match="other features than the cohort spec"):
        scoring.load_scoring_model(ref, spec)


def _automation_fixture(gate_passes: dict, promotion_passes: list[bool]):
    """Stand-ins for the upstream assets (same keys): synthetic_diabetes130/validated_extract with its per-extract blocking gate,
    and the promotion with its blocking ``promotion_criteria_met`` (its next verdict: ``promotion_passes[0]``)."""
    from clinical_mlops.defs.partitions import extract_partitions, validated_key
    from clinical_mlops.defs.scoring.assets import build_batch_predictions

    spec = load_cohort(COHORT)
    partitions = extract_partitions(spec.source)
    # Per-extract gate: a check spec partitioned like its asset (Dagster 1.13 preview), so the latest
    # result of *this* extract's check gates it, not the latest result of any extract's.
    gate_spec = dg.AssetCheckSpec("landed_rows_reconcile", asset=validated_key(spec.source), blocking=True,
                                  partitions_def=partitions)

    @dg.asset(key=validated_key(spec.source), partitions_def=partitions, kinds={"python"},
              check_specs=[gate_spec])
    def validated(context):
        yield dg.Output(None)
        yield dg.AssetCheckResult(passed=gate_passes.get(context.partition_key, True))

    promotion_key = dg.AssetKey([COHORT, "promotion"])

    @dg.asset(key=promotion_key, kinds={"python"},
              check_specs=[dg.AssetCheckSpec("promotion_criteria_met", asset=promotion_key, blocking=True)])
    def promotion():
        yield dg.Output(None)
        yield dg.AssetCheckResult(passed=promotion_passes.pop(0))

    batch = build_batch_predictions(spec)
    return validated, promotion, batch


def test_batch_scoring_follows_new_validated_extracts_only():
    """Declarative automation: a validated extract is scored once a promotion has run; a promotion (a new
    champion) does not re-score old extracts; an extract whose blocking gate failed is not scored; a blocked
    challenger does not stop the champion in force from scoring the next extract."""
    gate = {"bad.csv": False}
    validated, promotion, batch = _automation_fixture(gate, [True, True, False])
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey([COHORT, "batch_predictions"])

    from clinical_mlops.defs.resources import TrackingResource, WarehouseResource

    defs = dg.Definitions(  # the resources are never used: conditions are only evaluated
        assets=[validated, promotion, batch],
        resources={"warehouse": WarehouseResource(path="unused.duckdb"),
                   "tracking": TrackingResource(tracking_uri="sqlite:///unused.db", artifact_root="unused")},
    )

    def requested(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                   asset_selection=dg.AssetSelection.assets(key), cursor=cursor)
        return set(result.get_requested_partitions(key)), result.cursor

    cursor = requested(None)[1]
    instance.add_dynamic_partitions("synthetic_diabetes130_extracts", ["month_000.csv", "bad.csv"])
    for partition in ("month_000.csv", "bad.csv"):
        dg.materialize([validated], instance=instance, partition_key=partition, raise_on_error=False)
    parts, cursor = requested(cursor)
    assert parts == set()  # no promotion has run yet: nothing can name a champion
    dg.materialize([promotion], instance=instance)
    parts, cursor = requested(cursor)
    assert parts == {"month_000.csv"}  # the failed gate blocks "bad.csv"
    dg.materialize([promotion], instance=instance)  # a new champion
    parts, cursor = requested(cursor)
    assert parts == set()  # neither the scored extract nor the gated one
    dg.materialize([promotion], instance=instance, raise_on_error=False)  # a blocked challenger
    instance.add_dynamic_partitions("synthetic_diabetes130_extracts", ["month_001.csv"])
    dg.materialize([validated], instance=instance, partition_key="month_001.csv")
    parts, cursor = requested(cursor)
    assert parts == {"month_001.csv"}  # the champion in force scores it


def test_batch_predictions_depend_on_the_extract_and_the_promotion():
    """The champion comes from the promotion, not from whichever candidate was trained last."""
    from clinical_mlops.defs.scoring.assets import build_batch_predictions

    asset = build_batch_predictions(load_cohort(COHORT))
    key = dg.AssetKey([COHORT, "batch_predictions"])
    assert {d.asset_key for d in asset.specs_by_key[key].deps} == {
        dg.AssetKey(["synthetic_diabetes130", "validated_extract"]), dg.AssetKey([COHORT, "promotion"])}
    assert asset.automation_conditions_by_key[key].get_label() == "score_new_extract"


def test_chunked_scoring_equals_scoring_in_one_chunk(champion, configured):
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
    # one pass of the cohort SQL gives what its two standalone queries give: the rows scored and the rows excluded
    with warehouse.connect(configured.workspace.warehouse) as con:
        frame = scoring.extract_feature_frame(con, spec, extract)
        excluded = con.execute(
            f"SELECT count(*) FROM ({cohort_rows_sql(spec)}) WHERE extract_id = ? AND ({spec.excluded_sql})",
            [extract]).fetchone()[0]
    assert one.rows_scored == many.rows_scored == len(frame)
    assert one.rows_excluded == many.rows_excluded == excluded > 0  # the cohort's exclusion removes some here
    assert [r[0] for r in rows_one] == [int(i) for i in frame["encounter_id"]]

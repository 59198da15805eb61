"""Production monitoring: delayed label join, performance and fairness over time, training–serving skew,
and the monitoring assets through ``dg.materialize``."""

from __future__ import annotations

import csv
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from clinical_mlops.features import build as features
from clinical_mlops.monitoring import production as monitoring
from clinical_mlops.scoring import prediction_log, champion as scoring
from clinical_mlops.core import tracking, warehouse
from clinical_mlops.governance.policy import for_cohort, load_policy
from clinical_mlops_tests import _trained

COHORT = "synthetic_diabetes130_readmission_30d"


def _served_frame(con, spec, extract_ids: list[str]) -> pd.DataFrame:
    """Features of every encounter of the extracts, as a client system would send them (no exclusions)."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW encounter_base AS {features.cohort_rows_sql(spec)}")
    marks = ", ".join("?" for _ in extract_ids)
    return con.execute(
        f"SELECT encounter_id, {', '.join(spec.features)} FROM encounter_base WHERE extract_id IN ({marks}) "
        "ORDER BY encounter_id", extract_ids,
    ).df()


def serve_into_log(root: Path, model: scoring.ScoringModel, frame: pd.DataFrame, *, transform=None) -> int:
    """Write what the service would log for each row (a stand-in for HTTP traffic)."""
    spec = model.spec
    writer = prediction_log.PredictionLogWriter(root, spec.name, fsync=False)
    rows = frame.to_dict("records")
    feature_rows = [scoring.canonical_features(r, spec) for r in rows]
    if transform is not None:
        feature_rows = [transform(dict(f)) for f in feature_rows]
    risks = model.score(pd.DataFrame(feature_rows))
    for row, feats, risk in zip(rows, feature_rows, risks):
        threshold = model.ref.operating_threshold
        writer.append(prediction_log.KIND_PREDICTION, prediction_log.prediction_record(
            request_id=uuid.uuid4().hex, caller={"key_id": "test"}, cohort=spec.name,
            encounter_id=int(row["encounter_id"]), features=feats,
            input_sha256=scoring.input_sha256(feats, spec),
            response={"status": 200, "risk": float(risk), "flagged": bool(risk >= threshold), **model.ref.as_dict()},
        ))
    writer.close()
    return len(rows)


@pytest.fixture(scope="module")
def base(tmp_path_factory, mlflow_template, small_encounters):
    """Candidate trained on extracts 0-1; extract 2 served online (every encounter) and scored in batch."""
    root = tmp_path_factory.mktemp("monitoring")
    trained = _trained.build(root, mlflow_template, small_encounters, n_extracts=3, train_on=2)
    tracking.configure(trained.workspace.tracking_uri, trained.workspace.artifacts)
    MlflowClient().set_registered_model_alias("synthetic_diabetes130_readmission_30d_candidate", "champion", trained.outcome.model.version)
    model = scoring.load_scoring_model(scoring.resolve_champion(COHORT), trained.spec)
    with warehouse.connect(trained.workspace.warehouse) as con:
        served = _served_frame(con, trained.spec, [trained.extract_ids[2]])
        scoring.score_extract(con, model, trained.extract_ids[2])
    n = serve_into_log(root / "serving" / "prediction_log", model, served)
    return {"trained": trained, "model": model, "root": root, "served": n}


@pytest.fixture
def ws(base, tmp_path):
    """A private copy of the module's warehouse and log, so tests do not see each other's writes."""
    shutil.copyfile(base["trained"].workspace.warehouse, tmp_path / "warehouse.duckdb")
    shutil.copytree(base["root"] / "serving", tmp_path / "serving")
    return tmp_path


def _connect(ws: Path):
    return warehouse.connect(ws / "warehouse.duckdb")


def _ingest(con, ws: Path):
    summary = prediction_log.ingest(con, ws / "serving" / "prediction_log", COHORT)
    assert summary.ok, summary.problems
    return summary


def _write_labels(path: Path, pairs) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["encounter_id", "label"])
        writer.writerows(pairs)
    return path


# ---------------------------------------------------------------------------------------------
# label join
# ---------------------------------------------------------------------------------------------


def test_outcomes_wait_for_the_label_delay_then_join_with_the_cohort_label(base, ws):
    spec = base["trained"].spec
    with _connect(ws) as con:
        _ingest(con, ws)
        now = monitoring.utc_now()
        early = monitoring.join_labels(con, spec, label_delay_days=30, now=now + timedelta(days=10))
        assert early.labelled == 0 and early.awaiting_delay > 0
        assert early.predictions == base["served"] + int(con.execute(
            "SELECT count(*) FROM ml.batch_predictions").fetchall()[0][0])
        late = monitoring.join_labels(con, spec, label_delay_days=30, now=now + timedelta(days=31))
        assert late.newly_labelled == late.labelled == late.predictions - late.excluded
        assert late.excluded > 0  # died or hospice: outside the cohort, never labelled
        again = monitoring.join_labels(con, spec, label_delay_days=30, now=now + timedelta(days=32))
        assert again.newly_labelled == 0 and again.labelled == late.labelled
        wrong = con.execute(
            """SELECT count(*) FROM monitoring.prediction_outcomes o JOIN staging.synthetic_diabetes130 e USING (encounter_id)
               WHERE o.label <> CAST(e.readmitted = '<30' AS INTEGER)"""
        ).fetchall()[0][0]
        sources = dict(con.execute("SELECT source, count(*) FROM monitoring.prediction_outcomes GROUP BY 1").fetchall())
    assert wrong == 0
    assert set(sources) == {"online", "batch"}


def test_outcomes_not_yet_landed_wait(base, ws):
    spec = base["trained"].spec
    with _connect(ws) as con:
        _ingest(con, ws)
        con.execute("UPDATE raw.extracts SET landed_at = landed_at + INTERVAL 90 DAY")  # outcome extract arrives later
        summary = monitoring.join_labels(con, spec, label_delay_days=0)
    assert summary.labelled == 0 and summary.awaiting_outcome == summary.predictions


def test_a_labels_file_takes_precedence(base, ws):
    spec = base["trained"].spec
    with _connect(ws) as con:
        _ingest(con, ws)
        ids = [r[0] for r in con.execute(
            "SELECT encounter_id FROM monitoring.prediction_log WHERE kind = 'prediction' ORDER BY 1 LIMIT 5").fetchall()]
        truth = dict(con.execute(
            f"SELECT encounter_id, CAST(readmitted = '<30' AS INTEGER) FROM staging.synthetic_diabetes130 "
            f"WHERE encounter_id IN ({', '.join(map(str, ids))})").fetchall())
        labels = _write_labels(ws / "labels.csv", [(i, 1 - truth[i]) for i in ids])
        monitoring.join_labels(con, spec, label_delay_days=0, labels_file=labels)
        joined = con.execute(
            f"""SELECT DISTINCT encounter_id, label, label_source FROM monitoring.prediction_outcomes
                WHERE encounter_id IN ({', '.join(map(str, ids))})""").fetchall()
    assert sorted(joined) == sorted((i, 1 - truth[i], "labels_file") for i in ids)


def test_a_malformed_labels_file_is_refused_clearly(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("encounter_id,outcome\n1,1\n")
    with pytest.raises(ValueError, match="missing column"):
        monitoring.read_labels_file(bad)
    bad.write_text("encounter_id,label\n1,2\n")
    with pytest.raises(ValueError, match="0 or 1"):
        monitoring.read_labels_file(bad)


# ---------------------------------------------------------------------------------------------
# performance and fairness on production predictions
# ---------------------------------------------------------------------------------------------


def _scored(con) -> pd.DataFrame:
    """Aggregate view used to build controlled outcome files (never emitted)."""
    return con.execute(
        """SELECT p.encounter_id, min(p.risk) AS score, bool_or(p.flagged) AS flagged, first(e.race) AS race
           FROM monitoring.prediction_log p JOIN staging.synthetic_diabetes130 e USING (encounter_id)
           WHERE p.kind = 'prediction' GROUP BY p.encounter_id"""
    ).df()


def test_performance_passes_when_outcomes_follow_the_scores_and_fails_when_they_do_not(base, ws):
    spec = base["trained"].spec
    with _connect(ws) as con:
        _ingest(con, ws)
        scored = _scored(con)
        cut = scored["score"].quantile(0.8)
        good = _write_labels(ws / "good.csv", [(int(r.encounter_id), int(r.score >= cut)) for r in scored.itertuples()])
        bad = _write_labels(ws / "bad.csv", [(int(r.encounter_id), int(r.score < scored["score"].quantile(0.2)))
                                             for r in scored.itertuples()])
        con.execute("DELETE FROM ml.batch_predictions")  # online predictions only, labelled by the file
        monitoring.join_labels(con, spec, label_delay_days=0, labels_file=good)
        passing = monitoring.performance_over_time(con, spec, min_labelled=100, n_boot=50)
        con.execute("DELETE FROM monitoring.prediction_outcomes")
        monitoring.join_labels(con, spec, label_delay_days=0, labels_file=bad)
        failing = monitoring.performance_over_time(con, spec, min_labelled=100, n_boot=50)
        stored = con.execute("SELECT count(DISTINCT computed_at), count(*) FROM monitoring.production_metrics").fetchall()[0]
    assert passing.verdict == "pass", passing.reason
    assert failing.verdict == "fail" and "lies below" in failing.reason and "the held-out" in failing.reason
    assert passing.current_model == ("synthetic_diabetes130_readmission_30d_candidate", base["trained"].outcome.model.version)
    assert stored[0] == 2 and stored[1] > 0
    assert set(passing.table["period"]) == {"week", "window"}


def test_too_few_labels_is_insufficient_evidence_not_a_pass(base, ws):
    spec = base["trained"].spec
    with _connect(ws) as con:
        result = monitoring.performance_over_time(con, spec, min_labelled=100)
        fairness = monitoring.production_fairness(con, spec, policy=for_cohort(load_policy(), spec))
    assert result.verdict == "insufficient_evidence" and not result.evidence.passed
    assert result.reason == monitoring.no_labels_reason(90.0) and "0 labelled outcomes" in result.reason
    for rule in load_policy().fairness.metrics:
        judged = fairness.rule_evidence(rule.name)
        assert judged.evidence.status == "insufficient_evidence" and "0 labelled outcomes" in judged.evidence.reason


def test_an_auroc_interval_that_straddles_the_floor_is_insufficient_evidence(base, ws):
    """The offline gate's rule: a pass needs the whole interval at or above held-out AUROC minus tolerance."""
    spec = base["trained"].spec
    with _connect(ws) as con:
        _ingest(con, ws)
        con.execute("DELETE FROM ml.batch_predictions")
        monitoring.join_labels(con, spec, label_delay_days=0)  # the real outcomes of the served encounters
        real = monitoring.performance_over_time(con, spec, min_labelled=100, n_boot=50, store=False)
        auroc = real.window["auroc"]
        straddling = real.heldout_auroc - (auroc.lower + auroc.upper) / 2  # floor inside the interval
        judged = monitoring.performance_over_time(con, spec, min_labelled=100, n_boot=50, store=False,
                                                  auroc_tolerance=straddling)
    assert auroc.lower < auroc.upper
    assert judged.verdict == "insufficient_evidence" and "straddles" in judged.reason, judged.reason


def test_production_fairness_fails_when_one_group_is_missed(base, ws):
    """Outcomes where every AfricanAmerican readmission goes unflagged: recall 0 against 1 elsewhere."""
    spec = base["trained"].spec
    policy = for_cohort(load_policy(), spec)  # the policy with the sensitive attributes of the cohort's source
    with _connect(ws) as con:
        _ingest(con, ws)
        con.execute("DELETE FROM ml.batch_predictions")
        scored = _scored(con)
        labels = [(int(r.encounter_id), int(not r.flagged) if r.race == "AfricanAmerican" else int(r.flagged))
                  for r in scored.itertuples()]
        monitoring.join_labels(con, spec, label_delay_days=0, labels_file=_write_labels(ws / "l.csv", labels))
        result = monitoring.production_fairness(con, spec, policy=policy, n_bootstrap=50)
        stored = con.execute("SELECT DISTINCT model_role, policy_sha256 FROM monitoring.fairness_verdicts").fetchall()
    judged = result.rule_evidence("recall_gap")
    assert judged.evidence.status == "fail", judged.evidence.reason
    assert any(e["group"] == "AfricanAmerican" for e in judged.failing)
    assert stored == [("production", policy.sha256)]


# ---------------------------------------------------------------------------------------------
# training-serving skew
# ---------------------------------------------------------------------------------------------


def _skew_log(base, ws: Path, transform=None) -> None:
    trained = base["trained"]
    shutil.rmtree(ws / "serving" / "prediction_log")
    with _connect(ws) as con:
        frame = con.execute(
            f"SELECT * FROM {trained.spec.features_table} ORDER BY encounter_id LIMIT 400").df()
    serve_into_log(ws / "serving" / "prediction_log", base["model"], frame, transform=transform)


def test_served_features_equal_to_training_show_no_skew(base, ws):
    _skew_log(base, ws)
    with _connect(ws) as con:
        _ingest(con, ws)
        result = monitoring.training_serving_skew(con, base["trained"].spec, min_served=100)
    assert result.verdict == "pass", result.reason
    assert result.n_matched == 400 and int(result.table["mismatches"].sum()) == 0


def test_a_serving_pipeline_bug_is_caught_and_named(base, ws):
    """A client sends length of stay in hours instead of days."""
    _skew_log(base, ws, transform=lambda f: {**f, "time_in_hospital": f["time_in_hospital"] * 24})
    with _connect(ws) as con:
        _ingest(con, ws)
        result = monitoring.training_serving_skew(con, base["trained"].spec, min_served=100)
        stored = con.execute("SELECT feature FROM monitoring.serving_skew WHERE skewed").fetchall()
    assert result.verdict == "fail" and result.skewed_features == ("time_in_hospital",)
    row = result.table.set_index("feature").loc["time_in_hospital"]
    assert row["mismatch_rate"] == 1.0 and row["distribution_shift"]
    assert stored == [("time_in_hospital",)]


def test_too_few_served_requests_is_insufficient_evidence(base, ws):
    with _connect(ws) as con:
        result = monitoring.training_serving_skew(con, base["trained"].spec, min_served=100)
    assert result.verdict == "insufficient_evidence"


# ---------------------------------------------------------------------------------------------
# the monitoring assets
# ---------------------------------------------------------------------------------------------


def _resources(base, ws: Path) -> dict:
    from clinical_mlops.defs.resources import WarehouseResource

    return {**base["trained"].workspace.resources(),
            "warehouse": WarehouseResource(path=str(ws / "warehouse.duckdb"))}


def _log_config(ws: Path) -> dict:
    return {f"{COHORT}__prediction_log_ingest": {"config": {"prediction_log_dir": str(ws / "serving" / "prediction_log")}}}


def _materialize(base, ws):
    from clinical_mlops.defs.monitoring.assets import build_monitoring_assets

    return dg.materialize(
        build_monitoring_assets(base["trained"].spec),
        resources=_resources(base, ws),
        run_config=dg.RunConfig(ops={
            **_log_config(ws),
            f"{COHORT}__prediction_outcomes": {"config": {"label_delay_days": 0.0}},
            f"{COHORT}__production_monitoring": {"config": {"min_labelled": 100, "n_bootstrap": 30}},
            f"{COHORT}__training_serving_skew": {"config": {"min_served": 100}},
        }),
        raise_on_error=False,
    )


def test_monitoring_assets_run_end_to_end_and_state_their_checks(base, ws):
    result = _materialize(base, ws)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    policy = load_policy()
    assert {"prediction_log_chain_intact", "production_auroc_within_tolerance", "no_training_serving_skew",
            "estimated_fairness_within_policy", *(r.check_name for r in policy.fairness.metrics)} == set(checks)
    assert checks["prediction_log_chain_intact"].passed
    outcomes = result.asset_materializations_for_node(f"{COHORT}__prediction_outcomes")[0].metadata
    assert outcomes["labelled"].value > 0 and outcomes["label_delay_days"].value == 0.0
    production = result.asset_materializations_for_node(f"{COHORT}__production_monitoring")[0].metadata
    assert production["labelled_in_window"].value > 0 and "auroc_over_time" in production
    text = " ".join(str(m.value) for e in result.get_asset_materialization_events()
                    for m in e.materialization.metadata.values())
    with _connect(ws) as con:
        ids = [str(r[0]) for r in con.execute("SELECT encounter_id FROM monitoring.prediction_log "
                                              "WHERE encounter_id IS NOT NULL LIMIT 50").fetchall()]
    assert not any(i in text for i in ids), "no encounter id may reach metadata"


def test_a_tampered_log_fails_the_blocking_check_and_opens_an_incident(base, ws):
    assert _materialize(base, ws).success
    (segment,) = prediction_log.list_segments(ws / "serving" / "prediction_log" / COHORT)
    data = segment.read_bytes()
    segment.write_bytes(data.replace(b'"status":200', b'"status":201', 1))
    from clinical_mlops.defs.monitoring.assets import build_monitoring_assets

    ingest = [a for a in build_monitoring_assets(base["trained"].spec)
              if a.key == dg.AssetKey([COHORT, "prediction_log_ingest"])]
    result = dg.materialize(ingest, resources=_resources(base, ws), run_config=dg.RunConfig(ops=_log_config(ws)),
                            raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    with _connect(ws) as con:
        (severity, check_name), = con.execute(
            "SELECT severity, \"check\" FROM monitoring.incidents WHERE model = 'prediction_log'").fetchall()
    assert severity == "open_incident" and check_name.endswith("prediction_log_chain_intact")


def _production_checks(base, ws, *, outcomes: dict, monitoring_config: dict | None = None):
    """Materialize the monitoring assets; the evaluations of production_monitoring's checks by name."""
    from clinical_mlops.defs.monitoring.assets import build_monitoring_assets

    result = dg.materialize(
        build_monitoring_assets(base["trained"].spec),
        resources=_resources(base, ws),
        run_config=dg.RunConfig(ops={
            **_log_config(ws),
            f"{COHORT}__prediction_outcomes": {"config": outcomes},
            f"{COHORT}__production_monitoring": {"config": {"min_labelled": 100, "n_bootstrap": 30,
                                                            **(monitoring_config or {})}},
            f"{COHORT}__training_serving_skew": {"config": {"min_served": 100}},
        }),
        raise_on_error=False,
    )
    monitored = dg.AssetKey([COHORT, "production_monitoring"])
    return result, {c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key == monitored}


def test_production_checks_without_labelled_outcomes_are_insufficient_evidence_never_passed(base, ws):
    """Predictions made today, a 30-day label delay: no outcome in the window. Before issue 13 every one of
    these checks returned passed=True."""
    result, checks = _production_checks(base, ws, outcomes={"label_delay_days": 30.0})
    policy = load_policy()
    assert set(checks) == {"production_auroc_within_tolerance", *(r.check_name for r in policy.fairness.metrics)}
    for name, check in checks.items():
        assert not check.passed, name
        assert check.metadata["evidence"].value == "insufficient_evidence", name
        reason = check.metadata["evidence_reason"].value
        assert reason.startswith("0 labelled outcomes in the window") and "labels arrive after 30 days" in reason
        assert check.description.startswith("insufficient evidence: "), name
        assert check.severity == dg.AssetCheckSeverity.WARN, name  # shown, not a finding: the run goes on
    assert result.success
    production = result.asset_materializations_for_node(f"{COHORT}__production_monitoring")[0].metadata
    assert production["labelled_in_window"].value == 0 and production["performance_verdict"].value == (
        "insufficient_evidence")
    assert not any("incident_id" in check.metadata for check in checks.values()), "no evidence opens no incident"


def test_production_checks_fail_on_a_clear_gap(base, ws):
    """Labels where every AfricanAmerican readmission goes unflagged (recall gap) and, separately, outcomes
    that run against the scores (AUROC far below the held-out): the checks fail on evidence."""
    with _connect(ws) as con:
        _ingest(con, ws)
        scored = _scored(con)
    missed = [(int(r.encounter_id), int(not r.flagged) if r.race == "AfricanAmerican" else int(r.flagged))
              for r in scored.itertuples()]
    labels = _write_labels(ws / "missed.csv", missed)
    result, checks = _production_checks(base, ws, outcomes={"label_delay_days": 0.0, "labels_file": str(labels)})
    gap = checks["recall_gap_within_policy"]
    assert not gap.passed and gap.metadata["evidence"].value == "fail"
    assert gap.severity == dg.AssetCheckSeverity.ERROR
    assert any(g["group"] == "AfricanAmerican" for g in gap.metadata["failing"].value)
    assert "incident_id" in gap.metadata  # a blocking failure on evidence opens an incident
    assert not result.success  # and fails the run, as a blocking ERROR does

    low = scored["score"].quantile(0.2)
    inverted = _write_labels(ws / "inverted.csv", [(int(r.encounter_id), int(r.score < low))
                                                    for r in scored.itertuples()])
    with _connect(ws) as con:
        con.execute("DELETE FROM monitoring.prediction_outcomes")  # joined outcomes are never rewritten
    _, checks = _production_checks(base, ws, outcomes={"label_delay_days": 0.0, "labels_file": str(inverted)})
    auroc = checks["production_auroc_within_tolerance"]
    assert not auroc.passed and auroc.metadata["evidence"].value == "fail"
    assert "lies below" in auroc.metadata["evidence_reason"].value


def test_an_empty_prediction_log_is_insufficient_evidence_and_no_served_features_no_skew_pass(base, ws):
    from clinical_mlops.defs.monitoring.assets import build_monitoring_assets

    shutil.rmtree(ws / "serving" / "prediction_log")
    (ws / "serving" / "prediction_log").mkdir()
    wanted = (dg.AssetKey([COHORT, "prediction_log_ingest"]), dg.AssetKey([COHORT, "training_serving_skew"]))
    assets = [a for a in build_monitoring_assets(base["trained"].spec) if a.key in wanted]
    skew_config = {f"{COHORT}__training_serving_skew": {"config": {"min_served": 100}}}
    result = dg.materialize(assets, resources=_resources(base, ws), raise_on_error=False,
                            run_config=dg.RunConfig(ops={**_log_config(ws), **skew_config}))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    chain, skew = checks["prediction_log_chain_intact"], checks["no_training_serving_skew"]
    assert not chain.passed and chain.metadata["evidence"].value == "insufficient_evidence"
    assert chain.metadata["evidence_reason"].value.startswith("no prediction log segment for synthetic_diabetes130_readmission_30d")
    assert chain.severity == dg.AssetCheckSeverity.WARN
    assert not skew.passed and skew.metadata["evidence"].value == "insufficient_evidence"
    assert result.success  # nothing to verify is shown (WARN), and does not stop the batch outcomes

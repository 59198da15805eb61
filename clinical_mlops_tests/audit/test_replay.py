"""Replay: a registered model rebuilt from its recorded inputs is the same model, or the report says why not."""

from __future__ import annotations

import argparse
import json

import pytest

from clinical_mlops.cli import audit as cli_audit
from clinical_mlops.audit import ledger, replay
from clinical_mlops.training import modelling
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops_tests.audit._audit_graph import COHORT


def _replay(con, graph, name, version):
    return replay.replay(con, name, version, tracking_uri=graph.workspace.tracking_uri,
                         artifact_root=graph.workspace.artifacts)


@pytest.mark.parametrize("role", ["candidate", "baseline"])
def test_replay_reproduces_predictions_and_parameters_exactly(con, graph, role):
    name, version = getattr(graph, role), getattr(graph, f"{role}_version")
    report = _replay(con, graph, name, version)
    assert report.identical, report.to_markdown()
    checks = {c.name: c.ok for c in report.checks}
    assert checks == {name: True for name in ("input_extracts", "cohort_spec", "train_ids", "test_ids",
                                              "operating_threshold", "evaluation_set", "predictions",
                                              "canonical_parameters", "registered_artifact")}
    test_rows = con.execute("SELECT test_rows FROM ml.model_versions WHERE model_name = ? AND model_version = ?",
                            [name, version]).fetchall()[0][0]
    assert report.predictions_compared == test_rows and report.predictions_differing == 0
    assert report.max_abs_difference == 0.0
    assert "identical predictions" in report.explanation


def test_replay_uses_the_recorded_inputs_not_the_current_tables(con, graph):
    """Later re-splits or feature rebuilds do not change what a replay rebuilds."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM ml.splits WHERE cohort = ?", [COHORT])
        con.execute(f"DELETE FROM features.{COHORT} WHERE encounter_id % 3 = 0")
        report = _replay(con, graph, graph.candidate, graph.candidate_version)
    finally:
        con.execute("ROLLBACK")
    assert report.identical, report.to_markdown()


def test_an_altered_recorded_prediction_is_reported(con, graph):
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """UPDATE ml.predictions SET score = score + 1e-12 WHERE model_name = ? AND model_version = ?
               AND encounter_id = (SELECT min(encounter_id) FROM ml.predictions WHERE model_name = ?)""",
            [graph.candidate, graph.candidate_version, graph.candidate],
        )
        report = _replay(con, graph, graph.candidate, graph.candidate_version)
    finally:
        con.execute("ROLLBACK")
    assert not report.identical
    checks = {c.name: c for c in report.checks}
    assert checks["predictions"].ok is False and report.predictions_differing == 1
    assert checks["canonical_parameters"].ok, "the model is the same; the record was altered"
    assert checks["registered_artifact"].ok is False
    assert "predictions" in report.explanation


def test_a_changed_input_extract_and_environment_are_named_as_causes(con, graph, monkeypatch):
    recorded = dict(replay.provenance.package_versions())
    monkeypatch.setattr(replay.provenance, "package_versions", lambda: {**recorded, "scikit-learn": "0.0-other"})
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("UPDATE raw.extracts SET sha256 = repeat('0', 64) WHERE extract_id = ?", [graph.extract_ids[1]])
        report = _replay(con, graph, graph.candidate, graph.candidate_version)
    finally:
        con.execute("ROLLBACK")
    assert not report.identical
    assert {"package": "scikit-learn", "recorded": recorded["scikit-learn"], "current": "0.0-other"} in report.environment
    assert "input extracts changed" in report.explanation and "scikit-learn" in report.explanation
    assert graph.extract_ids[1] in {c.name: c for c in report.checks}["input_extracts"].detail


def test_canonical_parameters_identify_a_fitted_model(con, graph):
    spec = load_cohort(COHORT)
    inputs = replay.rebuild_recorded_inputs(con, spec, graph.extract_ids)
    first = modelling.fit(modelling.build_logistic_regression(spec, modelling.LogisticRegressionParams()), inputs.train, spec)
    again = modelling.fit(modelling.build_logistic_regression(spec, modelling.LogisticRegressionParams()), inputs.train, spec)
    other = modelling.fit(modelling.build_logistic_regression(spec, modelling.LogisticRegressionParams(C=0.1)),
                          inputs.train, spec)
    assert replay.canonical_parameters(first) == replay.canonical_parameters(again)
    differing = {k for k, v in replay.canonical_parameters(other).items() if replay.canonical_parameters(first)[k] != v}
    assert differing and all(".model." in k for k in differing), "only the classifier's fitted arrays change"


def test_replay_command_records_its_result(graph, monkeypatch, capsys):
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(graph.workspace.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    parser = argparse.ArgumentParser()
    cli_audit.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", "replay", "--model", graph.baseline, "--version", "latest", "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["identical"] is True
    last = list(ledger.read_entries(graph.ledger_path))[-1]
    assert last.event_type == "model_replayed" and last.payload["identical"] is True
    assert last.subject == f"model:{graph.baseline}/{graph.baseline_version}"

"""Drift checks under the evidence rule, at the Dagster check level: no pass without a comparison,
an error fails the asset, dataset drift opens one incident per cohort and extract."""

from __future__ import annotations

from functools import partial

import dagster as dg
import pytest

from clinical_mlops.core import warehouse
from clinical_mlops.governance.policy import load_policy
from clinical_mlops.ingestion import synthetic
from clinical_mlops_tests.helpers import asset_checks, ingest, materialize

COHORT = "synthetic_diabetes130_readmission_30d"
GROUPS = {"ingestion", "validation", "features", "training", "drift"}
NO_HTML = {"ops": {f"{COHORT}__drift_report": {"config": {"html_report": False}}}}
_ingest = partial(ingest, groups=GROUPS)
_materialize = partial(materialize, groups=GROUPS)


def _land(defs, workspace, instance, frame, name):
    frame.to_csv(workspace.landing / name, index=False, lineterminator="\n")
    _ingest(defs, workspace, instance, [name])


def _shifted() -> object:
    return synthetic.generate_encounters(synthetic.SyntheticConfig(
        n_encounters=1500, seed=99, shift=synthetic.PopulationShift(strength=1.0), first_encounter_id=90_000_000))


def test_no_reference_population_is_insufficient_evidence_never_a_pass(defs, workspace, small_encounters):
    instance = dg.DagsterInstance.ephemeral()
    _land(defs, workspace, instance, small_encounters.head(1500), "month_000.csv")
    assert _materialize(defs, workspace, instance, ["encounter_features"]).success
    result = _materialize(defs, workspace, instance, ["drift_report"], NO_HTML, "month_000.csv")
    assert result.success
    checks = asset_checks(result)
    for name in ("no_dataset_drift", "prediction_distribution_stable"):
        check = checks[name]
        assert not check.passed, name
        assert check.metadata["evidence"].value == "insufficient_evidence"
        assert "no reference population" in check.metadata["evidence_reason"].value
        assert check.metadata["extract_id"].value == "month_000.csv"
        assert check.partition == "month_000.csv"


def test_dataset_drift_opens_one_warn_incident_per_cohort_and_extract(defs, workspace, small_encounters):
    instance = dg.DagsterInstance.ephemeral()
    _land(defs, workspace, instance, small_encounters, "month_000.csv")
    _land(defs, workspace, instance, _shifted(), "month_shifted.csv")
    assert _materialize(defs, workspace, instance, ["encounter_features"]).success
    first = _materialize(defs, workspace, instance, ["drift_report"], NO_HTML, "month_shifted.csv")
    assert first.success
    checks = asset_checks(first)
    drift = checks["no_dataset_drift"]
    assert not drift.passed and drift.metadata["evidence"].value == "fail"
    # no model yet: prediction drift cannot be assessed, which is not a pass
    prediction = checks["prediction_distribution_stable"]
    assert not prediction.passed and prediction.metadata["evidence"].value == "insufficient_evidence"
    assert "no model to score" in prediction.metadata["evidence_reason"].value
    incident_id = drift.metadata["incident_id"].value
    policy = load_policy()
    rule = policy.escalation.for_severity(policy.drift.severity)
    with warehouse.connect(workspace.warehouse) as con:
        (severity, owner, check, hours), = con.execute(
            """SELECT severity, owner, "check", date_diff('hour', opened_at, due_by) FROM monitoring.incidents
               WHERE incident_id = ?""", [incident_id]).fetchall()
    assert severity == policy.drift.severity == "warn"
    assert owner == rule.owner and hours == rule.within_hours
    assert "month_shifted.csv" in check

    again = _materialize(defs, workspace, instance, ["drift_report"], NO_HTML, "month_shifted.csv")
    assert asset_checks(again)["no_dataset_drift"].metadata["incident_id"].value == incident_id
    with warehouse.connect(workspace.warehouse) as con:
        assert con.execute("SELECT count(*) FROM monitoring.incidents").fetchone()[0] == 1
    # the clean extract's result is its own: it neither drifts nor inherits the shifted one's failure
    clean = _materialize(defs, workspace, instance, ["drift_report"], NO_HTML, "month_000.csv")
    assert asset_checks(clean)["no_dataset_drift"].metadata["evidence"].value == "insufficient_evidence"


def test_an_error_in_prediction_drift_fails_the_asset(defs, workspace, small_encounters, monkeypatch):
    from clinical_mlops.drift import steps

    instance = dg.DagsterInstance.ephemeral()
    _land(defs, workspace, instance, small_encounters.head(2000), "month_000.csv")
    _land(defs, workspace, instance, small_encounters.iloc[2000:], "month_001.csv")
    trained = _materialize(defs, workspace, instance, ["encounter_features", "training_split", "candidate_model"],
                           {"ops": {f"{COHORT}__candidate_model": {"config": {"max_iter": 20}}}})
    assert trained.success

    def broken(*_args, **_kwargs):
        raise RuntimeError("model store unreadable")

    monkeypatch.setattr(steps.registry, "load_scoring_model", broken)
    result = _materialize(defs, workspace, instance, ["drift_report"], NO_HTML, "month_001.csv")
    assert not result.success, "a failure while scoring is not turned into a passing check"
    assert not [c for c in result.get_asset_check_evaluations() if c.passed]


@pytest.mark.parametrize("status", ["pass", "fail", "insufficient_evidence"])
def test_dataset_evidence_statuses(status):
    import dataclasses

    from clinical_mlops.drift import statistics as drift, steps

    settings = drift.DriftSettings()
    features = tuple(
        drift.FeatureDrift(name=f"f{i}", kind="feature", feature_type="numeric", test="ks", statistic=0.1,
                           p_value=0.01, p_value_adjusted=0.01, psi=0.3, significant=True,
                           drifted=(status == "fail"), material=True, n_reference=10, n_current=10)
        for i in range(0 if status == "insufficient_evidence" else 3)
    )
    result = drift.DriftResult(features=features, settings=settings, n_reference=10, n_current=10)
    evidence = steps._dataset_evidence(dataclasses.replace(result))
    assert evidence.status == status

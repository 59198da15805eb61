"""The fairness sensor reacts to production too: the early warning estimated before labels and the realised
production fairness checks request root cause and mitigation; missing evidence requests nothing."""

from __future__ import annotations

import dagster as dg
import pytest

from clinical_mlops.defs.fairness.sensors import fairness_check_failed_sensor, remediation_keys
from clinical_mlops_tests.conftest import READMISSION


def _report(instance, asset: str, check: str, status: str) -> None:
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey([READMISSION, asset]), check_name=check, passed=False,
        metadata={"evidence": status}, severity=dg.AssetCheckSeverity.WARN))


@pytest.mark.parametrize("asset, check", [("production_windows", "estimated_fairness_within_policy"),
                                          ("production_monitoring", "recall_gap_within_policy")])
def test_a_production_fairness_breach_requests_root_cause_and_mitigation_once(asset, check):
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, asset, check, "fail")
    result = fairness_check_failed_sensor(dg.build_sensor_context(instance=instance))
    (request,) = result.run_requests
    assert set(request.asset_selection) == set(remediation_keys(READMISSION))
    assert request.tags["failed_checks"] == check
    again = fairness_check_failed_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(again, dg.SkipReason)


def test_insufficient_evidence_in_production_requests_nothing():
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, "production_windows", "estimated_fairness_within_policy", "insufficient_evidence")
    assert isinstance(fairness_check_failed_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)

"""React to a failing fairness check: run root-cause analysis and mitigation for that cohort.

It watches the offline audit's checks (``[cohort, fairness_report]``), production's realised fairness checks
(``[cohort, production_monitoring]``) and the early warning estimated before the labels arrive
(``[cohort, production_windows]`` ``estimated_fairness_within_policy``): a gap found in production, estimated
or realised, prepares the same root cause and mitigated challenger for the governance board.

The sensor reads the latest evaluation of every fairness check from the instance's event log
(``get_latest_asset_check_execution_by_key``); a FAILED evaluation newer than the one recorded in
the cursor requests one run of ``[cohort, fairness_root_cause]`` and ``[cohort, mitigated_model]``,
keyed by the evaluation's storage id so it is requested once. A failure the remediation has already
answered (root cause and mitigated model both materialized after it, e.g. by ``clinical-mlops demo``)
requests nothing: the sensor never repeats work done outside it.
"""

import json

import dagster as dg

from clinical_mlops.defs.dagster_internals import AssetCheckExecutionRecordStatus
from clinical_mlops.features.cohort import load_all_cohorts
from clinical_mlops.governance.policy import load_policy

__all__ = ["defs", "fairness_check_failed_sensor", "remediation_keys"]


def remediation_keys(cohort: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([cohort, "fairness_root_cause"]), dg.AssetKey([cohort, "mitigated_model"])]


_EARLY_WARNING_CHECK = "estimated_fairness_within_policy"
"""The production windows' check on the estimated recall gap (before labels)."""


def _fairness_check_keys() -> dict[str, list[dg.AssetCheckKey]]:
    """Per cohort: every fairness check, offline (audit) and in production (realised, and estimated)."""
    policy = load_policy()
    return {
        spec.name: [dg.AssetCheckKey(dg.AssetKey([spec.name, asset]), rule.check_name)
                    for asset in ("fairness_report", "production_monitoring") for rule in policy.fairness.metrics]
        + [dg.AssetCheckKey(dg.AssetKey([spec.name, "production_windows"]), _EARLY_WARNING_CHECK)]
        for spec in load_all_cohorts()
    }


def _already_remediated(instance: dg.DagsterInstance, cohort: str, failed_at: float) -> bool:
    """Whether root cause and mitigation were both materialized after the failed evaluation (``failed_at``)."""
    for key in remediation_keys(cohort):
        latest = instance.get_latest_materialization_event(key)
        if latest is None or latest.timestamp < failed_at:
            return False
    return True


def _evaluated_at(record) -> float:
    """When the check was evaluated (its evaluation event), not when its run planned it."""
    return record.event.timestamp if record.event is not None else record.create_timestamp


def _is_failed(record) -> bool:
    status = getattr(record, "status", None)
    if AssetCheckExecutionRecordStatus is not None:
        return status == AssetCheckExecutionRecordStatus.FAILED
    return str(getattr(status, "value", status)) == "FAILED"


def _is_breach(record) -> bool:
    """A failed check whose evidence shows a breach (``fail``), not one that lacks evidence: root cause and
    mitigation explain a gap, they cannot supply missing evidence. Evaluations recorded before the
    evidence status existed count as breaches."""
    dagster_event = getattr(record.event, "dagster_event", None) if record.event is not None else None
    evaluation = getattr(dagster_event, "event_specific_data", None)
    value = (getattr(evaluation, "metadata", None) or {}).get("evidence")
    return getattr(value, "value", value) in (None, "fail")


@dg.sensor(
    name="fairness_check_failed_sensor",
    job_name="fairness_remediation_job",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A fairness check failing on evidence (a breach, not missing evidence) requests root-cause "
    "analysis and mitigation for its cohort.",
)
def fairness_check_failed_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    before = dict(seen)
    storage = context.instance.event_log_storage
    requests = []
    for cohort, keys in _fairness_check_keys().items():
        latest = storage.get_latest_asset_check_execution_by_key(keys)
        failed = [r for r in latest.values() if _is_failed(r) and _is_breach(r) and r.id > seen.get(cohort, 0)]
        if not failed:
            continue
        newest = max(r.id for r in failed)
        seen[cohort] = newest
        checks = sorted(r.key.name for r in failed)
        if _already_remediated(context.instance, cohort, max(_evaluated_at(r) for r in failed)):
            context.log.info(f"{cohort}: {', '.join(checks)} failed and was already remediated; nothing requested")
            continue
        requests.append(dg.RunRequest(
            run_key=f"{cohort}-fairness-{newest}",
            asset_selection=remediation_keys(cohort),
            tags={"cohort": cohort, "failed_checks": ",".join(checks), "trigger": "fairness_check_failed"},
        ))
        context.log.info(f"{cohort}: {', '.join(checks)} failed; requesting root cause and mitigation")
    if not requests:
        reason = "no new failing fairness check without remediation"
        return dg.SkipReason(reason) if seen == before else dg.SensorResult(
            skip_reason=reason, cursor=json.dumps(seen, sort_keys=True))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


def _jobs() -> list:
    specs = load_all_cohorts()
    return [
        dg.define_asset_job(
            "fairness_job",
            selection=dg.AssetSelection.assets(*[dg.AssetKey([s.name, "fairness_report"]) for s in specs]),
            description="Audit every cohort's latest candidate against the fairness policy.",
        ),
        dg.define_asset_job(
            "fairness_remediation_job",
            selection=dg.AssetSelection.assets(*[k for s in specs for k in remediation_keys(s.name)]),
            description="Root-cause analysis and mitigated challenger for cohorts with a failing fairness check.",
        ),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[fairness_check_failed_sensor], jobs=_jobs())

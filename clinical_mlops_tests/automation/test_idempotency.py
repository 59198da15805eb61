"""After a CLI-style run of the graph, nothing the automation does repeats it; a refused extract stays refused.

The fixture does what ``clinical-mlops land`` and ``demo`` do (``cli.runs``: ingestion per extract,
training, the fairness, release, drift and scoring jobs) on a small synthetic dataset, with one extract
carrying an SSN-like column landed *before* a clean one. Then one tick of every sensor and one
evaluation of every automation condition must request no run, and the refused extract must stay
refused per extract (partitioned checks), for the UI, the warehouse and the automation alike.
"""

from __future__ import annotations

import contextlib

import dagster as dg
import pytest

from clinical_mlops.core import warehouse
from clinical_mlops_tests.conftest import SYNTHETIC  # noqa: E402

pytestmark = pytest.mark.e2e

REFUSED = "month_000_ssn.csv"
COHORTS = ("synthetic_diabetes130_prolonged_stay", "synthetic_diabetes130_readmission_30d")
FAST = {"ops": {
    **{f"{c}__candidate_model": {"config": {"max_iter": 20}} for c in COHORTS},
    **{f"{c}__model_evaluation": {"config": {"n_bootstrap": 30}} for c in COHORTS},
}}


@pytest.fixture(scope="module")
def cli_project(tmp_path_factory, mlflow_template):
    """A data folder after a CLI-style run: (definitions, instance, data dir, clean extract ids)."""
    import shutil

    from clinical_mlops.cli import runs
    from clinical_mlops.ingestion import synthetic, uci

    root = tmp_path_factory.mktemp("cli_project")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("CLINICAL_MLOPS_DATA_DIR", str(root / "data"))
    for name in ("MLFLOW_TRACKING_URI", "CLINICAL_MLOPS_LANDING_DIR", "CLINICAL_MLOPS_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    from clinical_mlops.core.settings import default_paths

    paths = default_paths()
    landing_dir = paths.landing_dir / SYNTHETIC  # the synthetic source's folder of the landing zone
    landing_dir.mkdir(parents=True)
    store = paths.mlflow_tracking_uri.removeprefix("sqlite:///")
    if paths.mlflow_tracking_uri.startswith("sqlite:///"):
        from pathlib import Path

        Path(store).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mlflow_template, store)

    encounters = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=3_000, seed=7))
    leaky = encounters.head(300).copy()
    leaky["payer_code"] = "123-45-6789"  # an SSN-like column: the identifier gate refuses the extract
    leaky.to_csv(landing_dir / REFUSED, index=False, lineterminator="\n")
    clean = uci.write_sequential_extracts(encounters, landing_dir, 2, prefix="month")

    defs = runs.load_definitions()
    instance = dg.DagsterInstance.ephemeral()
    outcomes = {name: runs.run_ingestion(defs, instance, SYNTHETIC, name) for name in [REFUSED, *(p.name for p in clean)]}
    assert not outcomes[REFUSED].success
    assert all(outcomes[p.name].success for p in clean)
    assert runs.run_training(defs, instance, FAST, source=SYNTHETIC).success
    # the cross-source fairness jobs, restricted to the synthetic source's cohorts (the others have no data)
    from clinical_mlops.defs.fairness.sensors import remediation_keys
    from clinical_mlops.defs.jobs import job_name

    runs.run_job(defs, instance, "fairness_job", asset_selection=[dg.AssetKey([c, "fairness_report"]) for c in COHORTS])
    runs.run_job(defs, instance, "fairness_remediation_job",
                 asset_selection=[k for c in COHORTS for k in remediation_keys(c)])
    runs.run_job(defs, instance, job_name("release", SYNTHETIC))
    for stage in ("drift", "scoring"):
        runs.run_job(defs, instance, job_name(stage, SYNTHETIC), partition_key=clean[-1].name)
    from clinical_mlops.defs.audit.sensors import record_run

    for record in instance.get_run_records():
        record_run(instance, record.dagster_run.run_id, warehouse_path=paths.warehouse)
    yield defs, instance, paths, [p.name for p in clean]
    monkeypatch.undo()


def _sensor_context(defs, instance, paths):
    from clinical_mlops.defs.resources import LandingZoneResource, WarehouseResource

    return dg.build_sensor_context(
        instance=instance, definitions=defs,
        resources={"warehouse": WarehouseResource(path=str(paths.warehouse)),
                   "landing_zone": LandingZoneResource(directory=str(paths.landing_dir))},
    )


def _requests(result) -> list:
    return list(getattr(result, "run_requests", None) or [])


def test_one_tick_of_every_sensor_and_the_automation_request_nothing(cli_project):
    defs, instance, paths, _clean = cli_project
    ticked = []
    for sensor in defs.sensors:
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            continue  # evaluated below with evaluate_automation_conditions
        if isinstance(sensor, dg.RunStatusSensorDefinition):
            assert not sensor.targets, f"{sensor.name} reacts to runs; it must not launch any"
            continue
        result = sensor(_sensor_context(defs, instance, paths))
        assert _requests(result) == [], f"{sensor.name} repeated the CLI's work: {_requests(result)}"
        ticked.append(sensor.name)
    assert {f"landing_zone_sensor_{SYNTHETIC}", "drift_check_failed_sensor", "fairness_check_failed_sensor",
            "audit_ledger_sensor"} <= set(ticked)
    automation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    requested = {r.key.to_user_string(): r.true_subset.size for r in automation.results if r.true_subset.size}
    assert automation.total_requested == 0, f"the automation would launch: {requested}"


def test_a_refused_extract_stays_refused_after_a_clean_one_passes(cli_project):
    defs, instance, paths, clean = cli_project
    gate = dg.AssetCheckKey(dg.AssetKey(["synthetic_diabetes130", "raw_extract"]), "no_direct_identifiers")
    history = instance.event_log_storage.get_asset_check_execution_history(gate, limit=50)
    latest = {}
    for record in sorted(history, key=lambda r: r.id):
        latest[record.partition] = record
    assert set(latest) == {REFUSED, *clean}, "one gate outcome per extract"
    assert latest[REFUSED].evaluation is not None and not latest[REFUSED].evaluation.passed
    metadata = latest[REFUSED].evaluation.metadata
    assert metadata["extract_id"].value == REFUSED and metadata["gate_status"].value == "refused"
    assert all(latest[name].evaluation.passed for name in clean)

    with contextlib.closing(warehouse.connect(paths.warehouse, read_only=True)) as con:
        assert con.execute("SELECT status FROM raw.extracts WHERE extract_id = ?", [REFUSED]).fetchone() == ("rejected",)
        for table in ("raw.synthetic_diabetes130 WHERE _extract_id", "staging.synthetic_diabetes130 WHERE extract_id",
                      "features.synthetic_diabetes130_readmission_30d WHERE extract_id", "features.synthetic_diabetes130_prolonged_stay WHERE extract_id"):
            assert con.execute(f"SELECT count(*) FROM {table} = ?", [REFUSED]).fetchone()[0] == 0, table
    validated = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["synthetic_diabetes130", "validated_extract"]), asset_partitions=[REFUSED]), limit=1)
    assert not validated.records, "nothing downstream ran on the refused extract"

    # the automation gated per extract: the refused extract is never offered to validation
    automation = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                   asset_selection=dg.AssetSelection.assets(dg.AssetKey(["synthetic_diabetes130", "validated_extract"])))
    assert REFUSED not in automation.get_requested_partitions(dg.AssetKey(["synthetic_diabetes130", "validated_extract"]))

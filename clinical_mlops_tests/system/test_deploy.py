"""The scale-out path: the production instance config is valid Dagster config, the Helm values
say what the README says, and a PostgreSQL-backed instance runs the graph (where PostgreSQL is
installed on this machine; skipped cleanly elsewhere)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from clinical_mlops.ingestion import synthetic, uci
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops_tests.conftest import synthetic_assets
from clinical_mlops_tests.helpers import free_port

DEPLOY = PROJECT_ROOT / "deploy"
PG_ENV = ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_PORT")


def test_production_instance_config_is_valid_dagster_config(tmp_path, monkeypatch):
    from clinical_mlops.defs.dagster_internals import instance_config

    shutil.copy(DEPLOY / "dagster.postgres.yaml", tmp_path / "dagster.yaml")
    config = instance_config(tmp_path)
    assert config["telemetry"]["enabled"] is False
    assert "postgres" in config["storage"]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert all(field in yaml.safe_dump(config) for field in PG_ENV), "credentials come from the environment"


def test_helm_values_launch_runs_on_kubernetes_against_external_postgres():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    assert values["telemetry"]["enabled"] is False
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "clinical_mlops.definitions"]
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"  # never exposed directly
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile and "DAGSTER_DISABLE_TELEMETRY=1" in dockerfile


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (run as the postgres user when we are root)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed on this machine (apt-get install postgresql)")
    as_user: list[str] = []
    # Outside pytest's 0700 tmp tree, so the postgres user can reach it.
    root = Path(tempfile.mkdtemp(prefix="clinical_mlops_pg_"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                    "-o", f"-p {port} -h 127.0.0.1 -k {root}", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster",
                        "dagster"], check=True, capture_output=True)
        yield {"DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "unused-trust-auth",
               "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_PORT": str(port)}
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_a_postgres_backed_instance_runs_the_ingestion_graph(postgres, workspace, tmp_path, monkeypatch):
    import dagster as dg

    from clinical_mlops.definitions import defs

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.postgres.yaml", home / "dagster.yaml")
    for name, value in {**postgres, "DAGSTER_COMPUTE_LOG_DIR": str(tmp_path / "logs")}.items():
        monkeypatch.setenv(name, value)
    encounters = synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=800, seed=3))
    (extract,) = uci.write_sequential_extracts(encounters, workspace.landing, 1, prefix="pg")
    assets = synthetic_assets(defs())

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions("synthetic_diabetes130_extracts", [extract.name])
        result = dg.materialize(assets, selection=dg.AssetSelection.groups("ingestion", "validation"),
                                partition_key=extract.name, instance=instance, resources=workspace.resources())
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.is_success
        deadline = time.monotonic() + 10
        materialized = instance.get_latest_materialization_event(dg.AssetKey(["synthetic_diabetes130", "validated_extract"]))
        while materialized is None and time.monotonic() < deadline:
            time.sleep(0.2)
            materialized = instance.get_latest_materialization_event(dg.AssetKey(["synthetic_diabetes130", "validated_extract"]))
        assert materialized is not None
        assert materialized.asset_materialization.metadata["rows_valid"].value + \
            materialized.asset_materialization.metadata["rows_quarantined"].value == 800

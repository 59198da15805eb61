"""Resources, bound where they are defined, each with a local default and an env override."""


import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

from clinical_mlops.ingestion import deid
from clinical_mlops.core import warehouse
from clinical_mlops.core.settings import default_paths

WAREHOUSE_POOL = "duckdb_warehouse"
"""Every asset that writes the warehouse runs in this pool, so writers queue instead of failing."""

MLFLOW_UI = "http://127.0.0.1:5000"
"""Where asset metadata links to MLflow; ``CLINICAL_MLOPS_MLFLOW_UI`` overrides it."""


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file."""

    path: str

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = warehouse.connect(Path(self.path), read_only=read_only)
        try:
            yield con
        finally:
            con.close()


class LandingZoneResource(dg.ConfigurableResource):
    """The folder where extracts arrive."""

    directory: str

    def path_for(self, extract_id: str) -> Path:
        return Path(self.directory) / extract_id


class TrackingResource(dg.ConfigurableResource):
    """MLflow tracking store and registry (SQLite and local artifacts by default).

    Each fit is its own MLflow run and registered version (``core.tracking.log_fitted_model``),
    and each later step's evidence is a run nested under that version's run, logged at the run
    boundary (``defs/audit/evidence.py``). dagster-mlflow is not used: its ``mlflow_tracking``
    resource opens one MLflow run per *Dagster* run, held as the process's active run from
    resource set-up, so every fit would nest under a run that names no model and evidence could
    not sit under the version it concerns; its ``end_mlflow_on_run_finished`` hook ends that
    run after the job's last op, a notion asset jobs (subsets, partitions) do not have.
    """

    tracking_uri: str
    artifact_root: str
    ui_url: str = MLFLOW_UI

    def configure(self) -> None:
        from clinical_mlops.core import tracking

        tracking.configure(self.tracking_uri, Path(self.artifact_root))


class PseudonymisationResource(dg.ConfigurableResource):
    """Keyed hashing of patient identifiers; the key is read from the environment at run time."""

    key_env_var: str = "CLINICAL_MLOPS_PSEUDONYM_KEY"

    def key(self) -> tuple[bytes, bool]:
        return deid.pseudonym_key_from_env(self.key_env_var)


class ReportsResource(dg.ConfigurableResource):
    """Folder for rendered reports and plots."""

    directory: str

    def path(self, *parts: str) -> Path:
        target = Path(self.directory).joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def default_resources() -> dict[str, dg.ConfigurableResource]:
    paths = default_paths()
    return {
        "warehouse": WarehouseResource(path=str(paths.warehouse)),
        "landing_zone": LandingZoneResource(directory=str(paths.landing_dir)),
        "tracking": TrackingResource(
            tracking_uri=paths.mlflow_tracking_uri, artifact_root=str(paths.mlflow_artifact_root),
            ui_url=os.environ.get("CLINICAL_MLOPS_MLFLOW_UI", MLFLOW_UI),
        ),
        "pseudonymisation": PseudonymisationResource(),
        "reports": ReportsResource(directory=str(paths.reports_dir)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources(), executor=dg.in_process_executor)

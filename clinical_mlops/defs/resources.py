"""Resources, bound where they are defined, each with a local default and an env override."""


import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

from clinical_mlops.core import warehouse
from clinical_mlops.core.settings import default_paths
from clinical_mlops.core.steps import report_path
from clinical_mlops.governance.policy import POLICY_ENV, Policy, load_policy
from clinical_mlops.ingestion import deid

__all__ = ["MLFLOW_UI", "WAREHOUSE_POOL", "LandingZoneResource", "PolicyResource",
           "PseudonymisationResource", "ReportsResource", "TrackingResource", "WarehouseResource", "default_policy",
           "default_resources"]

WAREHOUSE_POOL = "duckdb_warehouse"
"""Every asset that writes the warehouse runs in this pool, so writers queue instead of failing."""

"""The governance policy file every asset and check judges by (default ``governance/policy.yaml``)."""

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
    """The folder where extracts arrive: one sub-folder per source (``<directory>/<source>/``)."""

    directory: str

    def source_dir(self, source: str) -> Path:
        return Path(self.directory) / source

    def path_for(self, source: str, extract_id: str) -> Path:
        return self.source_dir(source) / extract_id


class TrackingResource(dg.ConfigurableResource):
    """MLflow tracking store and registry (SQLite and local artifacts by default).

    Each fit is its own MLflow run and registered version (``core.tracking.log_fitted_model``),
    and each later step's evidence is a run nested under that version's run, logged at the run
    boundary (``defs/audit/evidence.py``). dagster-mlflow is used there too, wrapped
    (``defs/audit/dagster_runs_in_mlflow.py``): it opens the one MLflow run that stands for the
    whole Dagster run. It is not this resource because its ``mlflow_tracking`` resource holds one
    process-wide active run from set-up on, under which every fit would nest.
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
        return report_path(self.directory, *parts)


class PolicyResource(dg.ConfigurableResource):
    """The governance policy (``governance/policy.yaml``, or ``$CLINICAL_MLOPS_POLICY``): the one place
    assets and checks get it from. Sensors and the command line call the same ``load_policy``."""

    path: str = ""
    """Policy file; empty = the default policy file."""

    def load(self, override: str = "") -> Policy:
        """The policy, parsed and validated; ``override`` (an asset config's ``policy_path``) wins if set."""
        chosen = override or self.path
        return load_policy(Path(chosen) if chosen else None)


def default_policy() -> PolicyResource:
    """The policy resource as deployed; the asset checks declared from the policy use the same file."""
    return PolicyResource(path=os.environ.get(POLICY_ENV, ""))


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
        "policy": default_policy(),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources(), executor=dg.in_process_executor)

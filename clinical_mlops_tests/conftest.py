"""Shared fixtures: a temporary warehouse, landing zone and MLflow store per test."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# pytest runs two workers on two cores: one OpenMP thread each, or HistGradientBoosting
# oversubscribes the cores and slows down by an order of magnitude. Set before numpy loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from clinical_mlops.core.settings import switch_off_telemetry  # noqa: E402

switch_off_telemetry()
os.environ.setdefault("CLINICAL_MLOPS_PSEUDONYM_KEY", "test-key-not-secret")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "diabetes130"
UCI_ZIP = SHARED_DATA / "dataset_diabetes.zip"
SEPSIS_DATA = SHARED_DATA.parent / "sepsis_survival"

SYNTHETIC = "synthetic_diabetes130"
"""The source the synthetic generator's extracts land in (most tests use it)."""
READMISSION = f"{SYNTHETIC}_readmission_30d"
PROLONGED = f"{SYNTHETIC}_prolonged_stay"
"""The shipped cohorts on the synthetic source (a cohort on two sources is named ``<source>_<cohort>``)."""


def synthetic_source():
    """The synthetic source's loaded contract."""
    from clinical_mlops.sources.contract import load_source

    return load_source(SYNTHETIC)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def landing_root(self) -> Path:
        """The landing zone: one folder per source."""
        return self.root / "landing"

    @property
    def landing(self) -> Path:
        """The synthetic source's landing folder (``landing/synthetic_diabetes130``)."""
        return self.landing_root / SYNTHETIC

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    def resources(self) -> dict:
        from clinical_mlops.defs import resources as r

        return {
            "warehouse": r.WarehouseResource(path=str(self.warehouse)),
            "landing_zone": r.LandingZoneResource(directory=str(self.landing_root)),
            "tracking": r.TrackingResource(tracking_uri=self.tracking_uri, artifact_root=str(self.artifacts)),
            "pseudonymisation": r.PseudonymisationResource(),
            "reports": r.ReportsResource(directory=str(self.root / "reports")),
            "policy": r.PolicyResource(),
        }


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An initialised, empty MLflow SQLite store, created once (its migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    from clinical_mlops.core import tracking

    root = tmp_path_factory.mktemp("mlflow_template")
    tracking.configure(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")
    MlflowClient().search_experiments()
    return root / "mlflow.db"


@pytest.fixture
def workspace(tmp_path: Path, mlflow_template: Path) -> Workspace:
    ws = Workspace(tmp_path)
    ws.landing.mkdir(parents=True)
    (tmp_path / "mlflow").mkdir()
    shutil.copyfile(mlflow_template, tmp_path / "mlflow" / "mlflow.db")
    return ws


@pytest.fixture(scope="session")
def small_encounters():
    """3,000 synthetic encounters, generated once per session (all columns as text)."""
    from clinical_mlops.ingestion import synthetic

    return synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=3_000, seed=7))


@pytest.fixture(scope="session")
def chunked_encounters():
    """5,000 synthetic encounters (seed 11), generated once per session: five chunks at the 1,000-row chunk
    size of the chunked-path tests (all columns as text)."""
    from clinical_mlops.ingestion import synthetic

    return synthetic.generate_encounters(synthetic.SyntheticConfig(n_encounters=5_000, seed=11))


@pytest.fixture
def extract_file(workspace: Workspace, small_encounters) -> Path:
    """One valid extract in the landing zone."""
    path = workspace.landing / "extract_001.csv"
    small_encounters.to_csv(path, index=False, lineterminator="\n")
    return path


def requires_real_data() -> None:
    if not UCI_ZIP.exists():
        pytest.skip("the UCI extract is not at ../shared/data/diabetes130 (skipped on a user's clone)")


@pytest.fixture(scope="module")
def defs():
    """The project's Definitions, loaded once per test module."""
    from clinical_mlops.definitions import defs as load_defs

    return load_defs()


@pytest.fixture(scope="module")
def policy():
    """The shipped policy with the synthetic readmission cohort's source attributes (race, gender, age band)."""
    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops.governance.policy import for_cohort, load_policy

    return for_cohort(load_policy(), load_cohort(READMISSION))


@pytest.fixture
def con(workspace):
    """A read-write connection to the test's temporary warehouse (files needing another kind override it)."""
    from clinical_mlops.core import warehouse

    connection = warehouse.connect(workspace.warehouse)
    yield connection
    connection.close()


@pytest.fixture
def featured(con, workspace, chunked_encounters):
    """The readmission cohort's features and patient split in the test's warehouse, built from
    ``chunked_encounters`` landed and validated as one extract; the cohort's spec."""
    from clinical_mlops.features import build as features
    from clinical_mlops.features.cohort import load_cohort
    from clinical_mlops_tests.helpers import land_and_validate

    spec = load_cohort(READMISSION)
    land_and_validate(con, chunked_encounters, workspace.landing / "clean.csv", pseudonym_key=b"test-key")
    features.build_features(con, spec)
    features.assign_split(con, spec)
    return spec


def synthetic_assets(defs, groups: set[str] | None = None) -> list:
    """The assets of the synthetic source and its cohorts only (each source has its own extract partitions,
    so a run selecting a group across sources would mix partition definitions); with ``groups``, only the
    assets of those stages (other stages may need resources a test does not bind)."""
    import dagster as dg

    return [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)
            and all(k.path[0].startswith(SYNTHETIC) for k in a.keys)
            and (groups is None or set(a.group_names_by_key.values()) <= groups)]


def pytest_collection_modifyitems(config, items) -> None:
    """Whole-graph runs (marker ``e2e``) first: with ``--dist loadfile`` the two workers then start on the longest
    files and finish on short ones, instead of one worker running the last long file alone."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("e2e") else 1)

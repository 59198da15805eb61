"""Where things live on this machine, read from the environment with local defaults.

Every path defaults to a folder under the project's ``data/`` directory (gitignored), so a
fresh clone runs with no configuration; an operator points the same code elsewhere with
environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_COHORT",
    "PROJECT_ROOT",
    "Paths",
    "TELEMETRY_OFF",
    "THREAD_DEFAULTS",
    "default_paths",
    "switch_off_telemetry",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_COHORT = os.environ.get("CLINICAL_MLOPS_DEFAULT_COHORT", "synthetic_diabetes130_readmission_30d")
"""The cohort commands use without ``--cohort`` (``serve``, ``prediction-log verify``, ``fairness-summary``): by
default the readmission cohort on the synthetic source, the one ``clinical-mlops demo`` trains (a cohort on two
sources is named ``<source>_<cohort>``)."""

TELEMETRY_OFF: dict[str, str] = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    # MLflow would otherwise shell out to uv to export requirements on every log_model;
    # we pass pinned requirements ourselves.
    "MLFLOW_UV_AUTO_DETECT": "false",
}

THREAD_DEFAULTS: dict[str, str] = {
    # One OpenMP thread unless the operator says otherwise: on a two-core machine shared with
    # the Dagster daemon, the UI or a second run, scikit-learn's OpenMP threads spin against
    # each other and HistGradientBoosting fits and predicts several times slower (measured:
    # up to 10x). Set OMP_NUM_THREADS yourself on a dedicated machine.
    "OMP_NUM_THREADS": "1",
}


def switch_off_telemetry() -> None:
    """Disable every library's usage reporting for this process and its children."""
    for name, value in {**TELEMETRY_OFF, **THREAD_DEFAULTS}.items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class Paths:
    """The folders and files a run reads and writes."""

    data_dir: Path

    @property
    def landing_dir(self) -> Path:
        return Path(os.environ.get("CLINICAL_MLOPS_LANDING_DIR", self.data_dir / "landing"))

    @property
    def warehouse(self) -> Path:
        return Path(os.environ.get("CLINICAL_MLOPS_WAREHOUSE", self.data_dir / "warehouse.duckdb"))

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return os.environ.get(
            "MLFLOW_TRACKING_URI", f"sqlite:///{(self.mlflow_dir / 'mlflow.db').as_posix()}"
        )

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


def default_paths() -> Paths:
    """Paths from ``CLINICAL_MLOPS_DATA_DIR`` or ``<project>/data``."""
    return Paths(data_dir=Path(os.environ.get("CLINICAL_MLOPS_DATA_DIR", PROJECT_ROOT / "data")))

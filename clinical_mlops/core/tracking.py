"""MLflow experiment tracking and model registry, behind a few plain functions.

Every fit is one MLflow run that records the git commit (and whether the tree was dirty),
the lock file's hash, the data version (sha256) of every input extract, hyperparameters,
metrics and the model with its signature; the model is registered as a new version. No row
of patient data is logged: the signature is built from column types, never from an example.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clinical_mlops.core.settings import switch_off_telemetry

switch_off_telemetry()

import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
from mlflow.models.signature import ModelSignature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types import ColSpec, Schema  # noqa: E402


@dataclass(frozen=True)
class RegisteredModel:
    """Where a fitted model lives: its MLflow run and registered version."""

    name: str
    version: str
    run_id: str
    experiment_id: str
    model_uri: str


def configure(tracking_uri: str, artifact_root: Path) -> None:
    """Point MLflow at the local SQLite store (created on first use) and the artifact folder."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    artifact_root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    _initialise_store(tracking_uri)


_initialised: set[str] = set()


def _initialise_store(tracking_uri: str) -> None:
    """Create or migrate a SQLite store's tables under an exclusive file lock, once per process.

    Two processes opening a new store at once (two ``clinical-mlops land`` runs, a run beside
    the UI) would both run MLflow's migrations and one fails with ``UNIQUE constraint failed:
    alembic_version.version_num``. MLflow caches the store per URI, so later uses skip this.
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _initialised:
        return
    lock_path = Path(tracking_uri.removeprefix("sqlite:///") + ".init-lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _initialised.add(tracking_uri)


def ensure_experiment(name: str, artifact_root: Path) -> str:
    """The experiment's id, creating it with artifacts under ``artifact_root/name``."""
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=(artifact_root / name).resolve().as_uri())


def signature_for(numeric: list[str], categorical: list[str]) -> ModelSignature:
    """Input schema from declared column roles; output is the positive-class probability."""
    inputs = Schema([ColSpec("double", c) for c in numeric] + [ColSpec("string", c) for c in categorical])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "risk")]))


def _trusted_types(model: object) -> list[str]:
    """The skops types of our own freshly fitted model, so it can be loaded without pickle."""
    import skops.io as sio

    return sio.get_untrusted_types(data=sio.dumps(model))


def log_fitted_model(
    *,
    experiment: str,
    artifact_root: Path,
    registered_name: str,
    run_name: str,
    model: object,
    signature: ModelSignature,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    json_artifacts: Mapping[str, object] = {},
    pip_requirements: list[str] | None = None,
) -> RegisteredModel:
    """Log one fit as an MLflow run, register the model, and end the run even on failure."""
    experiment_id = ensure_experiment(experiment, artifact_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags(dict(tags))
        for name, payload in json_artifacts.items():
            mlflow.log_text(json.dumps(payload, indent=2, sort_keys=True, default=str), name)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=_trusted_types(model),
            pip_requirements=pip_requirements,
            registered_model_name=registered_name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        if key.startswith(("git_", "lock_", "data_version", "cohort")):
            client.set_model_version_tag(registered_name, version, key, value)
    return RegisteredModel(
        name=registered_name,
        version=version,
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        model_uri=f"models:/{registered_name}/{version}",
    )


def model_artifact_problem(name: str, version: str) -> str | None:
    """Why a registered version's model cannot be loaded from the local artifact store, or None.

    Names the folder that should hold the model (``MLmodel`` and the skops file), so an operator
    knows what was deleted or moved; non-local artifact stores are not checked here.
    """
    from urllib.parse import unquote, urlparse

    try:
        uri = MlflowClient().get_model_version_download_uri(name, str(version))
    except Exception as exc:  # noqa: BLE001 - the registry itself may be unreadable: say so
        return f"{name} v{version} is not in the registry ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    folder = Path(unquote(parsed.path))
    if not (folder / "MLmodel").is_file():
        return f"the model artifact of {name} v{version} is missing: no MLmodel in {folder}"
    return None


def load_model(model_uri: str):
    """Load a registered sklearn model (skops format, types trusted at logging time)."""
    return mlflow.sklearn.load_model(model_uri)


def run_url(tracking_ui: str, experiment_id: str, run_id: str) -> str:
    return f"{tracking_ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_url(tracking_ui: str, name: str, version: str) -> str:
    return f"{tracking_ui.rstrip('/')}/#/models/{name}/versions/{version}"


def active_run_leftover() -> bool:
    """True if an MLflow run is still open in this process (a bug: runs must be ended)."""
    return mlflow.active_run() is not None




def delete_model_version(name: str, version: str) -> None:
    """Remove a registered version whose warehouse records could not be written."""
    MlflowClient().delete_model_version(name, version)

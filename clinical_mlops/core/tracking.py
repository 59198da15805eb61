"""MLflow experiment tracking and model registry, behind a few plain functions.

Every fit is one MLflow run that records the git commit (and whether the tree was dirty),
the lock file's hash, the data version (sha256) of every input extract, hyperparameters,
metrics and the model with its signature; the model is registered as a new version. No row
of patient data is logged: the signature is built from column types, never from an example.

Every later step that produces evidence about a version (validation counts of its extracts,
evaluation, fairness, root cause, mitigation, drift, change control, model card) is one more
run, nested under the version's training run: :func:`log_step_evidence`. Opening the version's
run in the MLflow UI shows them all, each linked to the Dagster run that produced it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinical_mlops.core.settings import switch_off_telemetry

switch_off_telemetry()

import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.models.signature import ModelSignature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types import ColSpec, Schema  # noqa: E402

__all__ = [
    "DAGSTER_RUN_TAG",
    "EVIDENCE_SUFFIXES",
    "PARENT_RUN_TAG",
    "PARTITION_TAG",
    "STEP_TAG",
    "RegisteredModel",
    "StepEvidence",
    "active_run_leftover",
    "configure",
    "configured_tracking_uri",
    "delete_model_version",
    "ensure_experiment",
    "load_model",
    "log_fitted_model",
    "log_step_evidence",
    "metric_key",
    "model_artifact_problem",
    "model_version_url",
    "run_url",
    "signature_for",
    "store_lock",
]


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
    global _configured_uri
    _configured_uri = tracking_uri


_initialised: set[str] = set()
_configured_uri: str | None = None


def configured_tracking_uri() -> str | None:
    """The store :func:`configure` last pointed this process at (what its runs logged to), or None."""
    return _configured_uri


def _initialise_store(tracking_uri: str) -> None:
    """Create or migrate a SQLite store's tables under an exclusive file lock, once per process.

    Two processes opening a new store at once (two ``clinical-mlops land`` runs, a run beside
    the UI) would both run MLflow's migrations and one fails with ``UNIQUE constraint failed:
    alembic_version.version_num``. MLflow caches the store per URI, so later uses skip this.
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _initialised:
        return
    with store_lock(tracking_uri, "init"):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
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
        if key.startswith(("git_", "lock_", "data_version", "cohort", "source")):
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


# ---------------------------------------------------------------------------------------------
# evidence: one nested run per step, under the model version's training run
# ---------------------------------------------------------------------------------------------

PARENT_RUN_TAG = "mlflow.parentRunId"
"""MLflow's own tag: the UI shows a run carrying it nested under that run."""
STEP_TAG = "clinical_mlops.step"
DAGSTER_RUN_TAG = "dagster.run_id"
PARTITION_TAG = "dagster.partition"
EVIDENCE_SUFFIXES = frozenset({".html", ".md", ".json", ".png"})
"""Report files logged as evidence; anything else (data, models) is never picked up."""
_MAX_BATCH = 1000  # MLflow's per-request metric limit


@dataclass(frozen=True)
class StepEvidence:
    """The nested run holding one step's evidence; ``created`` is False when it already existed."""

    run_id: str
    parent_run_id: str
    created: bool


def metric_key(name: str) -> str:
    """``name`` as a valid MLflow metric key ("/" becomes ".", other odd characters "_")."""
    key = re.sub(r"[^A-Za-z0-9_.\- :]", "_", name.replace("/", "."))
    return key.strip(". ") or "_"


@contextlib.contextmanager
def store_lock(tracking_uri: str, purpose: str) -> Iterator[None]:
    """An exclusive file lock beside a local SQLite store (``<db>.<purpose>-lock``); no-op for a server."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    with open(tracking_uri.removeprefix("sqlite:///") + f".{purpose}-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _existing_evidence(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> list:
    keys = (PARENT_RUN_TAG, STEP_TAG, DAGSTER_RUN_TAG, PARTITION_TAG)
    clauses = [f"tags.`{k}` = '{tags[k]}'" for k in keys if k in tags]
    return list(client.search_runs([experiment_id], filter_string=" and ".join(clauses), max_results=10))


def log_step_evidence(
    *,
    model_name: str,
    model_version: str,
    step: str,
    metrics: Mapping[str, float],
    artifacts: Sequence[Path] = (),
    texts: Mapping[str, str] = {},
    dagster_run_id: str,
    dagster_run_url: str | None = None,
    partition: str | None = None,
    tags: Mapping[str, str] = {},
    tracking_uri: str | None = None,
) -> StepEvidence:
    """Log one step's metrics and report files as a run nested under the version's training run.

    Idempotent: the nested run is keyed by (training run, ``step``, ``dagster_run_id``,
    ``partition``); a finished one is returned as is, an unfinished one (a crash mid-logging) is
    replaced. On a local SQLite store the check and the logging hold a file lock, so the CLI and
    the audit sensor recording the same run at once log it once; a remote tracking server has no
    such lock (a rare race there leaves two identical nested runs). ``texts`` are small documents written as artefacts (``name`` → content). The
    version gets the tag ``evidence.<step>`` = the latest nested run's id, so its page links it.
    Metrics and files only: the caller passes counts, estimates and rendered reports, never rows.
    """
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    parent_run_id = client.get_model_version(model_name, str(model_version)).run_id
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run_tags = {
        PARENT_RUN_TAG: parent_run_id,
        STEP_TAG: step,
        DAGSTER_RUN_TAG: dagster_run_id,
        "clinical_mlops.model_name": model_name,
        "clinical_mlops.model_version": str(model_version),
        **({PARTITION_TAG: partition} if partition else {}),
        **({"dagster.run_url": dagster_run_url} if dagster_run_url else {}),
        **{k: str(v)[:5000] for k, v in tags.items()},
    }
    with store_lock(tracking_uri or mlflow.get_tracking_uri(), "evidence"):  # CLI and sensor may record one run at once
        for run in _existing_evidence(client, experiment_id, run_tags):
            if run.info.status == "FINISHED":
                return StepEvidence(run.info.run_id, parent_run_id, created=False)
            client.delete_run(run.info.run_id)
        run_id = client.create_run(experiment_id, tags=run_tags,
                                   run_name=f"{step} {partition}" if partition else step).info.run_id
        try:
            now = int(time.time() * 1000)
            entries = [Metric(metric_key(k), float(v), now, 0) for k, v in sorted(metrics.items())
                       if v is not None and math.isfinite(float(v))]
            for start in range(0, len(entries), _MAX_BATCH):
                client.log_batch(run_id, metrics=entries[start:start + _MAX_BATCH])
            for path in artifacts:
                client.log_artifact(run_id, str(path))
            for name, text in texts.items():
                client.log_text(run_id, text, name)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
    client.set_model_version_tag(model_name, str(model_version), f"evidence.{step}", run_id)
    return StepEvidence(run_id, parent_run_id, created=True)

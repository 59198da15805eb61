"""Each Dagster run that produced evidence stands in MLflow as one run, opened by dagster-mlflow.

The MLflow experiment ``dagster_runs`` holds one run per Dagster run that logged evidence about a
model version: the job and partition, the Dagster run's outcome as the MLflow status, its step and
materialization counts as metrics, a link to the Dagster run, and ``evidence_runs.json`` listing
each evidence run it logged (step, model version, nested run id). The Dagster run gets tags back to
it (:data:`RUN_ID_TAG`, :data:`RUN_URL_TAG`), so an auditor crosses from either UI to the other. The
evidence itself stays nested under each model version's run (``core.tracking.log_step_evidence``).

dagster-mlflow does the MLflow side: its ``MlFlow`` resource class opens the run, or finds it again
by its ``dagster_run_id`` tag from any process (the CLI and the audit sensor may both record one
run), and tags it. The project wraps it here instead of giving it to assets as a resource:

* as a resource it holds one process-wide active MLflow run from set-up on, under which every fit
  would nest, while a fit must be its own run (the registered version's lineage);
* its ``end_mlflow_on_run_finished`` hook ends that run after an op job's last op, which asset jobs
  (subsets, partitions) do not have.

At the run boundary the whole Dagster run is known, so the run is ended here with its real outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import dagster as dg

__all__ = [
    "EXPERIMENT",
    "RUN_ID_TAG",
    "RUN_URL_TAG",
    "EvidenceLink",
    "record_dagster_run",
]

log = logging.getLogger(__name__)

EXPERIMENT = "dagster_runs"
"""The MLflow experiment holding one run per recorded Dagster run."""
RUN_ID_TAG = "clinical_mlops/mlflow_run_id"
RUN_URL_TAG = "clinical_mlops/mlflow_run"
"""Tags on the Dagster run: its MLflow run's id and page."""
DIGEST_TAG = "clinical_mlops.evidence_sha256"
"""The MLflow run's record of what it lists, so recording the same Dagster run again logs nothing."""
_STATUS = {
    dg.DagsterRunStatus.SUCCESS: "FINISHED",
    dg.DagsterRunStatus.FAILURE: "FAILED",
    dg.DagsterRunStatus.CANCELED: "KILLED",
}


@dataclass(frozen=True, order=True)
class EvidenceLink:
    """One evidence run the Dagster run logged: its step, the model version, the nested run's id."""

    step: str
    model: str
    partition: str
    run_id: str


def _experiment_id(client, beside_run_id: str) -> str:
    """The experiment's id; a new one keeps its artefacts beside the experiment of ``beside_run_id``."""
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    sibling = client.get_experiment(client.get_run(beside_run_id).info.experiment_id).artifact_location
    return client.create_experiment(EXPERIMENT, artifact_location=f"{sibling.rstrip('/').rsplit('/', 1)[0]}/{EXPERIMENT}")


def record_dagster_run(
    instance: dg.DagsterInstance,
    run_id: str,
    links: Sequence[EvidenceLink],
    *,
    tracking_uri: str,
    dagster_run_url: str,
    mlflow_ui: str,
) -> str | None:
    """The MLflow run standing for a finished Dagster run, logged or found again; None if there is none.

    None when the Dagster run is unfinished or ``links`` is empty. A new ``dagster_runs`` experiment
    keeps its artefacts beside the models' experiments (never in the working directory).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from clinical_mlops.core import tracking

    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in _STATUS or not links:
        return None
    listed = [asdict(link) for link in sorted(set(links))]
    digest = hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with tracking.store_lock(tracking_uri, "evidence"):  # the CLI and the sensor may record one run at once
        experiment_id = _experiment_id(client, links[0].run_id)
        found = client.search_runs([experiment_id], filter_string=f"tags.dagster_run_id = '{run_id}'", max_results=1)
        if found and found[0].info.status == _STATUS[run.status] and found[0].data.tags.get(DIGEST_TAG) == digest:
            return found[0].info.run_id
        previous_uri = mlflow.get_tracking_uri()  # the resource points the whole process at its store
        try:
            mlflow_run_id = _log(instance, run, listed, tracking_uri, dagster_run_url, digest)
        finally:
            mlflow.set_tracking_uri(previous_uri)
    url = tracking.run_url(mlflow_ui, experiment_id, mlflow_run_id)
    instance.add_run_tags(run_id, {RUN_ID_TAG: mlflow_run_id, RUN_URL_TAG: url})
    return mlflow_run_id


def _log(instance: dg.DagsterInstance, run: dg.DagsterRun, listed: list[dict], tracking_uri: str,
         dagster_run_url: str, digest: str) -> str:
    """Open (or resume, found by its ``dagster_run_id`` tag) the run with dagster-mlflow, log, end it."""
    import mlflow

    context = SimpleNamespace(log=log, dagster_run=run, run_id=run.run_id, resource_config={
        "experiment_name": EXPERIMENT, "mlflow_tracking_uri": tracking_uri, "parent_run_id": None,
        "mlflow_run_id": None, "env": {}, "env_to_tag": None,
        "extra_tags": {"dagster.job_name": run.job_name, "dagster.run_url": dagster_run_url,
                       "dagster.partition": run.tags.get("dagster/partition", ""), DIGEST_TAG: digest},
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # dagster-mlflow's resource class and hook are beta
        from dagster_mlflow.resources import MlFlow

        try:
            mlf = MlFlow(context)
        except BaseException:
            if mlflow.active_run() is not None:
                mlflow.end_run("FAILED")
            raise
    try:
        stats = instance.get_run_stats(run.run_id)
        mlf.log_metrics({
            "evidence_runs": float(len(listed)),
            "model_versions": float(len({link["model"] for link in listed})),
            "steps_succeeded": float(stats.steps_succeeded),
            "steps_failed": float(stats.steps_failed),
            "materializations": float(stats.materializations),
            **({"duration_seconds": float(stats.end_time - stats.start_time)}
               if stats.start_time and stats.end_time else {}),
        })
        mlf.log_text(json.dumps({"dagster_run_id": run.run_id, "evidence_runs": listed}, indent=2, sort_keys=True),
                     "evidence_runs.json")
        return mlflow.active_run().info.run_id
    finally:
        mlf.end_run(status=_STATUS[run.status])

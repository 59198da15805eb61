"""Run one job of the project in a child process, optionally stopping at a named point.

``python -m clinical_mlops_tests.cli._fault_driver JOB [PARTITION]`` runs ``JOB`` on the project
instance (``DAGSTER_HOME``) with ``runs.run_job``, exactly as the command line does, and
records it in the audit ledger; ``--jobs JOB[:PARTITION] ...`` runs several in one process, where
``assets=KEY,KEY`` instead of a job name materializes just those assets (a smaller graph). With
``FAULT_POINT`` and ``FAULT_MARKER`` set, the child writes the marker file when it reaches that
point and then sleeps, so a test can ``SIGKILL`` it there, deterministically:

* ``validation_before_commit`` — inside validation's transaction, after its DELETEs and
  INSERTs ran and before ``COMMIT``;
* ``model_logged`` — inside the MLflow run of a fit, after the model's artifacts were written
  and the version registered, before the run ends and before the warehouse rows are written.
"""

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from clinical_mlops_tests.conftest import SYNTHETIC  # noqa: E402


def _stop_here() -> None:
    Path(os.environ["FAULT_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)


def _install(point: str) -> None:
    if point == "validation_before_commit":
        from clinical_mlops.validation import rules as validation
        from clinical_mlops.core import warehouse

        real = warehouse.transaction

        @contextlib.contextmanager
        def transaction(con) -> Iterator:
            with real(con):
                yield con
                _stop_here()

        validation.transaction = transaction
    elif point == "model_logged":
        import mlflow.sklearn

        real_log = mlflow.sklearn.log_model

        def log_model(*args, **kwargs):
            info = real_log(*args, **kwargs)
            _stop_here()
            return info

        mlflow.sklearn.log_model = log_model
    else:
        raise SystemExit(f"unknown FAULT_POINT {point}")


def main(argv: list[str]) -> int:
    """Run the job; print the outcome as JSON on stdout."""
    import dagster as dg

    from clinical_mlops.cli import runs
    from clinical_mlops.defs.audit.sensors import record_run

    if os.environ.get("FAULT_POINT"):
        _install(os.environ["FAULT_POINT"])
    if argv[0] == "--jobs":
        specs = [tuple(spec.split(":", 1)) if ":" in spec else (spec, None) for spec in argv[1:]]
    else:
        specs = [(argv[0], argv[1] if len(argv) > 1 else None)]
    instance = runs.project_instance()
    defs = runs.load_definitions()
    ok = True
    for job, partition in specs:
        if partition:
            runs.register_extracts(instance, SYNTHETIC, [partition])
        if job.startswith("assets="):
            selection = [dg.AssetKey.from_user_string(key) for key in job.removeprefix("assets=").split(",")]
            result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=selection, raise_on_error=False,
                run_config=runs.QUIET_RUN_CONFIG, tags=runs._actor_tags())
            outcome = runs._outcome(result)
        else:
            outcome = runs.run_job(defs, instance, job, partition_key=partition)
        record_run(instance, outcome.run_id)
        print(json.dumps({"job": job, "run_id": outcome.run_id, "success": outcome.success, "error": outcome.error,
                          "blocking_failures": outcome.blocking_failures}), flush=True)
        ok = ok and outcome.success
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The online scoring service: FastAPI, the champion from the registry, every request logged.

``create_app(config)`` builds the app; ``clinical-mlops serve`` runs it with uvicorn on
127.0.0.1. What a request goes through:

1. **Authentication**: header ``X-API-Key``; keys are stored as sha256 hashes
   (``clinical_mlops.scoring.api_keys``). The caller is recorded by key id, never by key.
2. **Validation** with a Pydantic model generated from the cohort spec's feature lists, the
   same schema as training (numeric features finite and >= 0, categorical features strings,
   nothing else accepted — an unexpected field could carry an identifier). Errors are 422 with
   the field path and the kind of problem, never the value.
3. **Scoring** with the champion (``clinical_mlops.scoring.champion``): alias ``champion`` on
   ``<cohort>_candidate`` or ``<cohort>_mitigated``. With no champion (none promoted, withdrawn,
   or the alias on both) every request is a 503 whose detail is the one-line reason batch scoring
   fails with, ``/healthz`` is 503 with that ``reason``, and nothing is scored or logged as a prediction.
   Rows of concurrent requests are scored together (``MicroBatcher``) by the compiled scorer
   (``_compiled``: the gradient-boosted pipeline as a few numpy operations, checked at load time to
   give *identical* probabilities on probe rows, else the pipeline itself scores; ``/v1/model``
   names which one is in service as ``scorer``).
4. **Logging**: request and response are appended to the hash-chained prediction log
   (``clinical_mlops.scoring.prediction_log``) and fsync'ed *before* the response is sent (group
   commit: one write and one fsync for every entry pending at that moment); if the log
   cannot be written the request fails with 503 and no risk is returned. Rejected requests
   (401, 422) are logged too, without their bodies (only a sha256). No DuckDB in this path.
   The event loop never blocks: it awaits the batcher's and the log's futures, so the only
   threads a request touches are the scoring thread and the log's writer.
5. **Hot swap**: a background thread resolves the alias every ``poll_seconds``; a new
   champion is loaded beside the current one and swapped in with one reference assignment,
   so in-flight requests finish on the model they started with and none is refused.

Parts: ``_schema`` (the request model), ``_runtime`` (the champion holder and the
micro-batcher), ``_compiled`` (the compiled scorer), ``_app`` (the FastAPI app, its configuration, ``serve``).
"""

from clinical_mlops.scoring.service._app import (
    API_KEY_HEADER,
    DEFAULT_POLL_SECONDS,
    MAX_BODY_BYTES,
    ServiceState,
    ServingConfig,
    app_from_environment,
    create_app,
    default_api_keys_path,
    default_prediction_log_root,
    serve,
)
from clinical_mlops.scoring.service._runtime import ChampionHolder, MicroBatcher, NoModelAvailable
from clinical_mlops.scoring.service._schema import feature_model, request_model, validation_errors

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_POLL_SECONDS",
    "MAX_BODY_BYTES",
    "ChampionHolder",
    "MicroBatcher",
    "NoModelAvailable",
    "ServiceState",
    "ServingConfig",
    "app_from_environment",
    "create_app",
    "default_api_keys_path",
    "default_prediction_log_root",
    "feature_model",
    "request_model",
    "serve",
    "validation_errors",
]

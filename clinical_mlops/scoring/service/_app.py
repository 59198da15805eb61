"""The FastAPI app of the scoring service: authentication, validation, scoring, logging before answering.

Not ``from __future__ import annotations``: FastAPI reads the real annotations.
"""

import asyncio
import hashlib
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from clinical_mlops.core.reporting import canonical_json
from clinical_mlops.core.settings import default_paths, switch_off_telemetry
from clinical_mlops.features.cohort import CohortSpec, load_cohort
from clinical_mlops.core.settings import DEFAULT_COHORT
from clinical_mlops.scoring import api_keys, prediction_log, champion as scoring
from clinical_mlops.scoring.service._runtime import ChampionHolder, MicroBatcher, NoModelAvailable
from clinical_mlops.scoring.service._schema import request_model, validation_errors

switch_off_telemetry()

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_POLL_SECONDS",
    "MAX_BODY_BYTES",
    "ServiceState",
    "ServingConfig",
    "app_from_environment",
    "create_app",
    "default_api_keys_path",
    "default_prediction_log_root",
    "serve",
]

API_KEY_HEADER = "X-API-Key"
DEFAULT_POLL_SECONDS = 10.0
MAX_BODY_BYTES = 64 * 1024


default_api_keys_path = api_keys.default_keys_path
default_prediction_log_root = prediction_log.default_root


@dataclass(frozen=True)
class ServingConfig:
    """Where the service finds its model, keys and log."""

    cohort: str
    tracking_uri: str
    artifact_root: Path
    api_keys_path: Path
    log_root: Path
    poll_seconds: float = DEFAULT_POLL_SECONDS
    fsync: bool = True

    @classmethod
    def from_environment(cls, cohort: str = DEFAULT_COHORT, **overrides) -> "ServingConfig":
        paths = default_paths()
        values = dict(
            cohort=cohort,
            tracking_uri=paths.mlflow_tracking_uri,
            artifact_root=paths.mlflow_artifact_root,
            api_keys_path=default_api_keys_path(),
            log_root=default_prediction_log_root(),
            poll_seconds=float(os.environ.get("CLINICAL_MLOPS_CHAMPION_POLL_SECONDS", DEFAULT_POLL_SECONDS)),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class ServiceState:
    """What one app holds: its configuration, keys, model holder, log writer and batcher."""

    config: ServingConfig
    spec: CohortSpec
    keys: api_keys.ApiKeyStore
    holder: ChampionHolder
    log: prediction_log.PredictionLogWriter | None = None
    batcher: MicroBatcher | None = None
    started_at: float = field(default_factory=time.time)


def _body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def create_app(config: ServingConfig, *, spec: CohortSpec | None = None) -> FastAPI:
    """The scoring service for one cohort."""
    from clinical_mlops.core import tracking

    spec = spec or load_cohort(config.cohort)
    Body = request_model(spec)
    state = ServiceState(config=config, spec=spec, keys=api_keys.ApiKeyStore(config.api_keys_path),
                         holder=ChampionHolder(spec))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        tracking.configure(config.tracking_uri, Path(config.artifact_root))
        state.log = prediction_log.PredictionLogWriter(
            Path(config.log_root), spec.name, fsync=config.fsync,
            meta={"service": "clinical-mlops serve", "cohort_spec_sha256": spec.spec_hash},
        )
        await run_in_threadpool(state.holder.refresh)
        state.holder.start(config.poll_seconds)
        state.batcher = MicroBatcher(state.holder)
        try:
            yield
        finally:
            state.holder.stop()
            state.batcher.stop()
            state.log.close()

    app = FastAPI(
        title=f"clinical-mlops scoring service: {spec.name}",
        version="1",
        description=f"{spec.title}. Intended use: {spec.intended_use}",
        lifespan=lifespan,
    )
    app.state.service = state

    async def _log(kind: str, record: dict) -> prediction_log.LogEntry:
        """Append ``record``; returns once it is fsync'ed, without blocking the event loop."""
        assert state.log is not None
        return await asyncio.wrap_future(state.log.submit(kind, record))

    async def _reject(status: int, request_id: str, caller: dict | None, body: bytes, detail: str,
                errors: list[dict] | None = None) -> JSONResponse:
        record = {
            "request_id": request_id,
            "caller": caller or {"key_id": None},
            "cohort": spec.name,
            "body_sha256": _body_sha256(body),
            "response": {"status": status, "error_fields": [e["field"] for e in errors or []] or None},
        }
        try:
            await _log(prediction_log.KIND_REJECTED, record)
        except prediction_log.PredictionLogClosed:
            return JSONResponse({"detail": "prediction log unavailable"}, status_code=503)
        content: dict = {"detail": detail, "request_id": request_id}
        if errors:
            content["errors"] = errors
        headers = {"WWW-Authenticate": API_KEY_HEADER} if status == 401 else None
        return JSONResponse(content, status_code=status, headers=headers)

    async def _score_and_log(request_id: str, caller: dict, parsed: BaseModel) -> JSONResponse:
        features = scoring.canonical_features(parsed.features.model_dump(), spec)
        started = time.perf_counter()
        try:
            assert state.batcher is not None
            risk, model = await asyncio.wrap_future(state.batcher.submit(features))  # the model that scored it
        except NoModelAvailable as exc:  # nothing scored: the 503 says why, the log records a rejection only
            errors = [{"field": "model", "type": "unavailable", "message": str(exc)}]
            return await _reject(503, request_id, caller, parsed.model_dump_json().encode(), str(exc), errors)
        model_ms = (time.perf_counter() - started) * 1000
        threshold = model.ref.operating_threshold
        response = {
            "status": 200,
            "risk": risk,
            "flagged": None if threshold is None else bool(risk >= threshold),
            **model.ref.as_dict(),
        }
        input_hash = hashlib.sha256(canonical_json(features).encode()).hexdigest()
        record = prediction_log.prediction_record(
            request_id=request_id, caller=caller, cohort=spec.name, encounter_id=parsed.encounter_id,
            features=features, input_sha256=input_hash, response=response, model_ms=model_ms,
        )
        try:
            entry = await _log(prediction_log.KIND_PREDICTION, record)  # returns once fsync'ed
        except prediction_log.PredictionLogClosed:
            return JSONResponse({"detail": "prediction log unavailable: nothing was scored",
                                 "request_id": request_id}, status_code=503)
        return JSONResponse(
            {
                "prediction_id": request_id,
                "cohort": spec.name,
                "risk": risk,
                "flagged": response["flagged"],
                "operating_threshold": threshold,
                "model": {
                    "name": model.ref.name,
                    "version": model.ref.version,
                    "source": model.ref.source,
                    "card_sha256": model.ref.model_card_sha256,
                },
                "input_sha256": input_hash,
                "log": {"segment": state.log.segment if state.log else None, "seq": entry.seq, "hash": entry.hash},
            },
            headers={"X-Request-ID": request_id},
        )

    @app.post(
        "/v1/predict",
        summary="Risk for one encounter (requires X-API-Key)",
        openapi_extra={"requestBody": {"required": True,
                                       "content": {"application/json": {"schema": Body.model_json_schema()}}}},
    )
    async def predict(request: Request) -> JSONResponse:
        request_id = uuid.uuid4().hex
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            body = b""  # not read: refused on its declared size
        else:
            body = await request.body()
        presented = request.headers.get(API_KEY_HEADER)
        record = state.keys.authenticate(presented)
        if record is None:
            detail = "missing API key" if not presented else "invalid API key"
            return await _reject(401, request_id, None, body, f"{detail} ({API_KEY_HEADER} header)")
        caller = {"key_id": record.key_id, "name": record.name}
        if len(body) > MAX_BODY_BYTES or (declared.isdigit() and int(declared) > MAX_BODY_BYTES):
            errors = [{"field": "body", "type": "too_large", "message": f"body over {MAX_BODY_BYTES} bytes"}]
            return await _reject(413, request_id, caller, body, "request body too large", errors)
        try:
            parsed = Body.model_validate_json(body)
        except ValidationError as exc:
            errors = validation_errors(exc)
            return await _reject(422, request_id, caller, body, "invalid input", errors)
        return await _score_and_log(request_id, caller, parsed)

    @app.get("/v1/model", summary="The model in service and the input schema (requires X-API-Key)")
    async def model_info(request: Request) -> JSONResponse:
        if state.keys.authenticate(request.headers.get(API_KEY_HEADER)) is None:
            return JSONResponse({"detail": f"missing or invalid API key ({API_KEY_HEADER} header)"}, status_code=401)
        model = state.holder.current
        return JSONResponse({
            "cohort": spec.name,
            "model": None if model is None else {**model.ref.as_dict(), "note": model.ref.note,
                                                 "scorer": "pipeline" if model.compiled is None else "compiled"},
            "reason": state.holder.unavailable_reason,
            "input_schema": Body.model_json_schema(),
            "log_segment": state.log.segment if state.log else None,
        })

    @app.get("/healthz", summary="Liveness and the model version in service (no authentication)")
    async def healthz() -> JSONResponse:
        model = state.holder.current
        body = {
            "status": "ok" if model is not None else "no_model",
            "cohort": spec.name,
            "model_version": None if model is None else model.ref.version,
            "model_source": None if model is None else model.ref.source,
            "reason": state.holder.unavailable_reason,
            "uptime_seconds": round(time.time() - state.started_at, 1),
        }
        return JSONResponse(body, status_code=200 if model is not None else 503)

    return app


def serve(config: ServingConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the service with uvicorn (one process; the log's group commit serves concurrent requests)."""
    import uvicorn

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, access_log=False)


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory clinical_mlops.scoring.service:app_from_environment``."""
    return create_app(ServingConfig.from_environment(os.environ.get("CLINICAL_MLOPS_SERVE_COHORT", DEFAULT_COHORT)))

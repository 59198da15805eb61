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
   ``<cohort>_candidate``, else the latest registered version (and the response says so).
4. **Logging**: request and response are appended to the hash-chained prediction log
   (``clinical_mlops.scoring.prediction_log``) and fsync'ed *before* the response is sent; if the log
   cannot be written the request fails with 503 and no risk is returned. Rejected requests
   (401, 422) are logged too, without their bodies (only a sha256). No DuckDB in this path.
5. **Hot swap**: a background thread resolves the alias every ``poll_seconds``; a new
   champion is loaded beside the current one and swapped in with one reference assignment,
   so in-flight requests finish on the model they started with and none is refused.

Not ``from __future__ import annotations``: FastAPI reads the real annotations.
"""

import hashlib
import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from clinical_mlops.scoring import api_keys, prediction_log, champion as scoring
from clinical_mlops.features.cohort import CohortSpec, load_cohort
from clinical_mlops.core.settings import default_paths, switch_off_telemetry

switch_off_telemetry()

logger = logging.getLogger("clinical_mlops.scoring.service")

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
    def from_environment(cls, cohort: str = "readmission_30d", **overrides) -> "ServingConfig":
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


# ---------------------------------------------------------------------------------------------
# the request schema, from the cohort spec
# ---------------------------------------------------------------------------------------------


def feature_model(spec: CohortSpec) -> type[BaseModel]:
    """Pydantic model of one encounter's features: the training schema of the cohort."""
    fields: dict[str, tuple] = {}
    for name in spec.numeric_features:
        fields[name] = (float, Field(..., ge=0, allow_inf_nan=False, description="numeric feature, >= 0"))
    for name in spec.categorical_features:
        fields[name] = (str, Field(..., min_length=1, max_length=200, description="categorical feature"))
    return create_model(
        f"{spec.name}_features", __config__=ConfigDict(extra="forbid", title=f"{spec.title}: features"), **fields
    )


def request_model(spec: CohortSpec) -> type[BaseModel]:
    """The body of ``POST /v1/predict``: optional encounter id (for the label join) and features."""
    return create_model(
        f"{spec.name}_prediction_request",
        __config__=ConfigDict(extra="forbid"),
        encounter_id=(int | None, Field(None, ge=1, description="the encounter scored, so outcomes can be joined")),
        features=(feature_model(spec), Field(...)),
    )


def validation_errors(exc: ValidationError) -> list[dict]:
    """Field path, kind and message of each error; the offending value is never echoed."""
    return [
        {"field": ".".join(str(p) for p in error["loc"]) or "body", "type": error["type"], "message": error["msg"]}
        for error in exc.errors(include_input=False, include_url=False)
    ]


# ---------------------------------------------------------------------------------------------
# the champion, refreshed in the background
# ---------------------------------------------------------------------------------------------


class ChampionHolder:
    """Holds the model in service; ``refresh`` loads a newly promoted champion and swaps it in."""

    def __init__(self, spec: CohortSpec) -> None:
        self.spec = spec
        self._current: scoring.ScoringModel | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.swaps = 0

    @property
    def current(self) -> scoring.ScoringModel | None:
        return self._current

    def refresh(self) -> bool:
        """Resolve the alias; load and swap if it points elsewhere. True when the model changed."""
        with self._lock:
            try:
                ref = scoring.resolve_champion(self.spec.name)
            except Exception as exc:  # noqa: BLE001 - keep serving the current model
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                return False
            current = self._current
            if current is not None and (current.ref.name, current.ref.version) == (ref.name, ref.version):
                if current.ref != ref:  # same version, new card hash or source: no reload needed
                    self._current = replace(current, ref=ref)
                self.last_error = None
                return False
            try:
                loaded = scoring.load_scoring_model(ref, self.spec)
            except Exception as exc:  # noqa: BLE001
                self.last_error = f"could not load {ref.name} v{ref.version}: {exc.__class__.__name__}: {exc}"
                logger.error(self.last_error)
                return False
            self._current = loaded  # one reference assignment: atomic for readers
            self.swaps += 1
            self.last_error = None
            logger.info("serving %s v%s (%s)", ref.name, ref.version, ref.note or ref.source)
            return True

    def start(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="champion-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# micro-batching: concurrent requests share one predict call
# ---------------------------------------------------------------------------------------------


class NoModelAvailable(RuntimeError):
    """No champion could be loaded yet."""


@dataclass
class _ScoreJob:
    features: dict
    done: threading.Event = field(default_factory=threading.Event)
    risk: float | None = None
    model: scoring.ScoringModel | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Scores the rows of all requests waiting at that moment in one ``predict_proba`` call.

    With one request in flight this is a plain call (no waiting for company); under load, the
    per-call overhead of the scikit-learn pipeline (column transformer, pandas) is paid once per
    batch instead of once per request. Each row reports the model that scored it, so a swap
    mid-stream is recorded exactly.
    """

    def __init__(self, holder: ChampionHolder, *, max_batch: int = 256) -> None:
        self.holder = holder
        self.max_batch = max_batch
        self._pending: list[_ScoreJob] = []
        self._cv = threading.Condition()
        self._stopped = False
        self.batches = 0
        self.rows = 0
        self._thread = threading.Thread(target=self._run, name="scoring-batcher", daemon=True)
        self._thread.start()

    def score(self, features: dict) -> tuple[float, scoring.ScoringModel]:
        job = _ScoreJob(features)
        with self._cv:
            if self._stopped:
                raise NoModelAvailable("the service is shutting down")
            self._pending.append(job)
            self._cv.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.model is not None and job.risk is not None
        return job.risk, job.model

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        # Small batches gain nothing from OpenMP threads, which would compete with the event
        # loop and the log writer; the limit applies to this (the scoring) thread.
        threadpool_limits(limits=1)
        while True:
            with self._cv:
                while not self._pending and not self._stopped:
                    self._cv.wait()
                if self._stopped and not self._pending:
                    return
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            model = self.holder.current
            try:
                if model is None:
                    raise NoModelAvailable(self.holder.last_error or "no champion model is available yet")
                risks = model.score(pd.DataFrame([job.features for job in batch]))
                for job, risk in zip(batch, risks):
                    job.risk, job.model = float(risk), model
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                for job in batch:
                    job.error = exc
            self.batches += 1
            self.rows += len(batch)
            for job in batch:
                job.done.set()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------


@dataclass
class ServiceState:
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

    def _log(kind: str, record: dict) -> prediction_log.LogEntry:
        assert state.log is not None
        return state.log.append(kind, record)

    def _reject(status: int, request_id: str, caller: dict | None, body: bytes, detail: str,
                errors: list[dict] | None = None) -> JSONResponse:
        record = {
            "request_id": request_id,
            "caller": caller or {"key_id": None},
            "cohort": spec.name,
            "body_sha256": _body_sha256(body),
            "response": {"status": status, "error_fields": [e["field"] for e in errors or []] or None},
        }
        try:
            _log(prediction_log.KIND_REJECTED, record)
        except prediction_log.PredictionLogClosed:
            return JSONResponse({"detail": "prediction log unavailable"}, status_code=503)
        content: dict = {"detail": detail, "request_id": request_id}
        if errors:
            content["errors"] = errors
        headers = {"WWW-Authenticate": API_KEY_HEADER} if status == 401 else None
        return JSONResponse(content, status_code=status, headers=headers)

    def _score_and_log(request_id: str, caller: dict, parsed: BaseModel) -> JSONResponse:
        features = scoring.canonical_features(parsed.features.model_dump(), spec)
        started = time.perf_counter()
        try:
            assert state.batcher is not None
            risk, model = state.batcher.score(features)  # the model that scored this row
        except NoModelAvailable as exc:
            errors = [{"field": "model", "type": "unavailable", "message": str(exc)}]
            return _reject(503, request_id, caller, parsed.model_dump_json().encode(),
                           "no champion model is available yet", errors)
        model_ms = (time.perf_counter() - started) * 1000
        threshold = model.ref.operating_threshold
        response = {
            "status": 200,
            "risk": risk,
            "flagged": None if threshold is None else bool(risk >= threshold),
            **model.ref.as_dict(),
        }
        input_hash = hashlib.sha256(scoring.canonical_json(features).encode()).hexdigest()
        record = prediction_log.prediction_record(
            request_id=request_id, caller=caller, cohort=spec.name, encounter_id=parsed.encounter_id,
            features=features, input_sha256=input_hash, response=response, model_ms=model_ms,
        )
        try:
            entry = _log(prediction_log.KIND_PREDICTION, record)  # returns once fsync'ed
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
            return await run_in_threadpool(_reject, 401, request_id, None, body, f"{detail} ({API_KEY_HEADER} header)")
        caller = {"key_id": record.key_id, "name": record.name}
        if len(body) > MAX_BODY_BYTES or (declared.isdigit() and int(declared) > MAX_BODY_BYTES):
            errors = [{"field": "body", "type": "too_large", "message": f"body over {MAX_BODY_BYTES} bytes"}]
            return await run_in_threadpool(_reject, 413, request_id, caller, body, "request body too large", errors)
        try:
            parsed = Body.model_validate_json(body)
        except ValidationError as exc:
            errors = validation_errors(exc)
            return await run_in_threadpool(_reject, 422, request_id, caller, body, "invalid input", errors)
        return await run_in_threadpool(_score_and_log, request_id, caller, parsed)

    @app.get("/v1/model", summary="The model in service and the input schema (requires X-API-Key)")
    async def model_info(request: Request) -> JSONResponse:
        if state.keys.authenticate(request.headers.get(API_KEY_HEADER)) is None:
            return JSONResponse({"detail": f"missing or invalid API key ({API_KEY_HEADER} header)"}, status_code=401)
        model = state.holder.current
        return JSONResponse({
            "cohort": spec.name,
            "model": None if model is None else {**model.ref.as_dict(), "note": model.ref.note},
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
    return create_app(ServingConfig.from_environment(os.environ.get("CLINICAL_MLOPS_SERVE_COHORT", "readmission_30d")))

